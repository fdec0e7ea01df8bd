//! Drawing a [`View`] with ratatui, and as plain text for `--once`.

use std::fmt::Write as _;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table};

use crate::model::{COLUMNS, CommandRow, View};

/// What the screen shows besides the data.
#[derive(Debug, Default)]
pub(crate) struct Ui {
    pub(crate) sort: usize,
    pub(crate) reverse: bool,
    pub(crate) selected: usize,
    pub(crate) histogram: bool,
    pub(crate) message: Option<String>,
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn command_cells(c: &CommandRow) -> [String; 9] {
    [
        c.name.clone(),
        format!("{:.0}", c.qps),
        c.calls.to_string(),
        format!("{:.1}", c.p50_us),
        format!("{:.1}", c.p99_us),
        format!("{:.1}", c.max_us),
        opt(c.on_cpu_ms()),
        opt(c.off_cpu_ms),
        opt(c.io_wait_ms),
    ]
}

/// Draws one frame.
pub(crate) fn draw(frame: &mut Frame<'_>, view: Option<&View>, ui: &Ui) {
    let [header, commands, lower, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(6),
        Constraint::Length(10),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let Some(view) = view else {
        let text = ui
            .message
            .clone()
            .unwrap_or_else(|| "connecting...".to_owned());
        frame.render_widget(
            Paragraph::new(text).block(Block::bordered().title("ferrite-top")),
            frame.area(),
        );
        return;
    };

    let summary = format!(
        "rollup #{}  kernel view: {}  unattributed io: {}  instrumentation: {:.1} ms  rollup: {:.2} ms{}",
        view.sequence,
        view.kernel_status,
        view.unattributed
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        view.instrumentation_ms,
        view.rollup_ms,
        ui.message
            .as_deref()
            .map_or_else(String::new, |m| format!("  ({m})")),
    );
    frame.render_widget(Paragraph::new(summary), header);

    let titles = COLUMNS.iter().enumerate().map(|(i, c)| {
        if i == ui.sort {
            format!("{c}{}", if ui.reverse { "^" } else { "v" })
        } else {
            (*c).to_owned()
        }
    });
    let rows = view.commands.iter().enumerate().map(|(i, c)| {
        let row = Row::new(command_cells(c));
        if i == ui.selected {
            row.style(Style::default().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    });
    let widths = [
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(11),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(titles).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(
            Block::bordered()
                .title("commands (s: sort, r: reverse, up/down, enter: histogram, q: quit)"),
        );
    frame.render_widget(table, commands);

    if ui.histogram {
        if let Some(command) = view.commands.get(ui.selected) {
            let bars: Vec<Bar<'_>> = command
                .buckets
                .iter()
                .map(|(low, _, count)| {
                    Bar::default()
                        .value(*count)
                        .text_value(count.to_string())
                        .label(Line::from(format!("{}us", low / 1000)))
                })
                .collect();
            let chart = BarChart::default()
                .block(
                    Block::bordered()
                        .title(format!("{}: latency histogram since start", command.name)),
                )
                .bar_width(6)
                .data(BarGroup::default().bars(&bars));
            frame.render_widget(chart, lower);
        }
    } else {
        let [io, slow] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(lower);
        let io_rows = view.opcodes.iter().map(|o| {
            Row::new([
                o.opcode.clone(),
                o.ops.to_string(),
                o.errors.to_string(),
                format!("{:.0}", o.p50_upper_us),
                format!("{:.0}", o.p99_upper_us),
            ])
        });
        let io_table = Table::new(
            io_rows,
            [
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(9),
            ],
        )
        .header(
            Row::new(["opcode", "ops", "errors", "p50<= us", "p99<= us"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::bordered().title("io_uring by opcode (kernel view)"));
        frame.render_widget(io_table, io);
        let slow_lines: Vec<Line<'_>> = view
            .slow
            .iter()
            .map(|s| {
                Line::from(format!(
                    "#{} {} {:.0} us {}",
                    s.id,
                    s.command,
                    s.duration_us,
                    s.kernel.as_deref().unwrap_or("")
                ))
            })
            .collect();
        frame.render_widget(
            Paragraph::new(slow_lines).block(Block::bordered().title("slow commands")),
            slow,
        );
    }
    frame.render_widget(
        Paragraph::new(format!("sorted by {}", COLUMNS[ui.sort])),
        footer,
    );
}

/// The view as plain text (`--once`).
pub(crate) fn text(view: &View) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel view: {}", view.kernel_status);
    let _ = writeln!(out, "{}", COLUMNS.map(|c| format!("{c:>12}")).join(""));
    for c in &view.commands {
        let _ = writeln!(
            out,
            "{}",
            command_cells(c).map(|v| format!("{v:>12}")).join("")
        );
    }
    if !view.opcodes.is_empty() {
        let _ = writeln!(
            out,
            "\n{:>12}{:>12}{:>12}{:>12}",
            "opcode", "ops", "errors", "p99<= us"
        );
        for o in &view.opcodes {
            let _ = writeln!(
                out,
                "{:>12}{:>12}{:>12}{:>12.0}",
                o.opcode, o.ops, o.errors, o.p99_upper_us
            );
        }
    }
    if !view.slow.is_empty() {
        let _ = writeln!(out, "\nslow commands:");
        for s in &view.slow {
            let _ = writeln!(
                out,
                "  #{} {} {:.0} us {}",
                s.id,
                s.command,
                s.duration_us,
                s.kernel.as_deref().unwrap_or("")
            );
        }
    }
    out
}
