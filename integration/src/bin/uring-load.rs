//! Another process's io_uring activity, for the test that the kernel view
//! counts only its own process: `uring-load OPS` submits OPS no-op and read
//! requests on a ring of its own, prints `started`, then `done OPS`.

use std::io::Write;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, types};

fn main() -> std::io::Result<()> {
    let ops: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mut ring = IoUring::new(64)?;
    let file = std::fs::File::open("/proc/self/exe")?;
    let mut buf = vec![0u8; 512];
    println!("started");
    std::io::stdout().flush()?;
    let mut done = 0;
    while done < ops {
        let batch = (ops - done).min(32);
        for i in 0..batch {
            let sqe = if i % 2 == 0 {
                opcode::Nop::new().build()
            } else {
                opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), 512)
                    .offset(0)
                    .build()
            };
            // SAFETY: `buf` outlives the request: every request of the batch
            // completes before the next batch.
            unsafe { ring.submission().push(&sqe.user_data(i)) }.expect("the batch fits the ring");
        }
        ring.submit_and_wait(batch as usize)?;
        done += ring.completion().count() as u64;
    }
    println!("done {done}");
    Ok(())
}
