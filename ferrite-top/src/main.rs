//! `ferrite-top`: a live terminal view of a process running ferrite-obs.
//!
//! ```text
//! ferrite-top [--endpoint ADDR] [--interval-ms N] [--sort COLUMN] [--once | --json]
//! ```
//!
//! Reads the process's ferrite-obs endpoint (default `127.0.0.1:9464`) and
//! shows, refreshed live: per command its rate, latency quantiles, time off
//! the CPU and io_uring wait (with the kernel view), io_uring requests by
//! opcode, the slow-command log, the kernel view's status and what the
//! instrumentation costs. `--once` prints the same as text and exits;
//! `--json` prints what the endpoint serves as one JSON object. An
//! unreachable endpoint, or one of another version, is said plainly.

mod model;
mod view;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};

use model::{COLUMNS, View};
use view::Ui;

struct Args {
    endpoint: SocketAddr,
    interval: Duration,
    sort: usize,
    once: bool,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoint: SocketAddr::from(([127, 0, 0, 1], 9464)),
        interval: Duration::from_secs(1),
        sort: 1,
        once: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--endpoint" => {
                let v = value()?;
                args.endpoint = v.parse().map_err(|_| {
                    format!("--endpoint {v}: expected ADDRESS:PORT, such as 127.0.0.1:9464")
                })?;
            }
            "--interval-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().ok().filter(|ms| *ms >= 50).ok_or_else(|| {
                    format!("--interval-ms {v}: expected a number of milliseconds, at least 50")
                })?;
                args.interval = Duration::from_millis(ms);
            }
            "--sort" => {
                let v = value()?;
                args.sort = COLUMNS
                    .iter()
                    .position(|c| c.split(' ').next() == Some(v.as_str()))
                    .ok_or_else(|| format!("--sort {v}: expected one of command, qps, calls, p50, p99, max, on-CPU, off-CPU, io"))?;
            }
            "--once" => args.once = true,
            "--json" => args.json = true,
            "--help" | "-h" => {
                return Err("usage: ferrite-top [--endpoint ADDR] [--interval-ms N] [--sort COLUMN] [--once | --json]".into());
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("ferrite-top: {message}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        return match model::fetch_json(args.endpoint) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "ferrite-top: {e} (is the server running with [observability] enabled and its endpoint on?)"
                );
                ExitCode::FAILURE
            }
        };
    }
    if args.once {
        return match model::fetch(args.endpoint) {
            Ok(mut view) => {
                model::sort(&mut view.commands, args.sort, false);
                print!("{}", view::text(&view));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "ferrite-top: {e} (is the server running with [observability] enabled and its endpoint on?)"
                );
                ExitCode::FAILURE
            }
        };
    }
    let mut terminal = ratatui::init();
    let result = run(&mut terminal, &args);
    ratatui::restore();
    if let Err(e) = result {
        eprintln!("ferrite-top: terminal error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run(terminal: &mut ratatui::DefaultTerminal, args: &Args) -> std::io::Result<()> {
    let mut ui = Ui {
        sort: args.sort,
        ..Ui::default()
    };
    let mut view: Option<View> = None;
    let mut next_fetch = Instant::now();
    loop {
        if Instant::now() >= next_fetch {
            match model::fetch(args.endpoint) {
                Ok(fresh) => {
                    view = Some(fresh);
                    ui.message = None;
                }
                Err(e) => {
                    ui.message = Some(format!(
                        "{e}; retrying every {} ms",
                        args.interval.as_millis()
                    ));
                }
            }
            next_fetch = Instant::now() + args.interval;
        }
        if let Some(view) = view.as_mut() {
            model::sort(&mut view.commands, ui.sort, ui.reverse);
            ui.selected = ui.selected.min(view.commands.len().saturating_sub(1));
        }
        terminal.draw(|frame| view::draw(frame, view.as_ref(), &ui))?;
        let wait = next_fetch
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        if event::poll(wait)?
            && let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
        {
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('s') => ui.sort = (ui.sort + 1) % COLUMNS.len(),
                KeyCode::Char('r') => ui.reverse = !ui.reverse,
                KeyCode::Up => ui.selected = ui.selected.saturating_sub(1),
                KeyCode::Down => ui.selected += 1,
                KeyCode::Enter => ui.histogram = !ui.histogram,
                _ => {}
            }
        }
    }
}
