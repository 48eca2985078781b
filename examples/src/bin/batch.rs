//! `batch-framework`: runs `--tasks N` copies of `--command` on a Corral cluster and exits
//! when all have ended: 0 if every task finished, 1 naming each task that failed. See the
//! library's `batch` module.

use clap::Parser;
use example_frameworks::batch::{self, BatchArgs};
use example_frameworks::say;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = BatchArgs::parse();
    let total = args.tasks;
    match batch::run(args).await {
        Ok(report) if report.failed.is_empty() => {
            say(format_args!("all {total} tasks finished"));
            std::process::ExitCode::SUCCESS
        }
        Ok(report) => {
            for (i, why) in &report.failed {
                eprintln!("batch-framework: task {i} failed: {why}");
            }
            say(format_args!(
                "{} of {total} tasks finished, {} failed",
                report.finished,
                report.failed.len()
            ));
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("batch-framework: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
