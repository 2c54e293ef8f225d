//! The fleet process, as the harness drives it: started as `herald-bench churn-fleet`, sent orders on its
//! stdin, its answers read and stamped on arrival by a thread of their own.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::time::Instant;

use herald_testkit::{ChildGuard, spawn_guarded};
use tokio::sync::mpsc;

use super::protocol::{Answer, FleetArgs, Order};

/// The fleet process, as the harness drives it.
pub(super) struct Fleet {
    /// Declared first: closing stdin lets the fleet exit before the guard kills it.
    stdin: ChildStdin,
    pub(super) answers: mpsc::UnboundedReceiver<(Instant, Answer)>,
    _child: ChildGuard,
}

impl Fleet {
    pub(super) fn spawn(program: &PathBuf, args: &FleetArgs) -> Fleet {
        let mut cmd = Command::new(program);
        cmd.arg("churn-fleet")
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = spawn_guarded(cmd);
        let stdin = child.child_mut().stdin.take().expect("fleet stdin");
        let stdout = child.child_mut().stdout.take().expect("fleet stdout");
        let (tx, answers) = mpsc::unbounded_channel();
        // A thread of its own stamps each answer as it arrives, whatever the runtime is doing.
        std::thread::Builder::new()
            .name("churn-fleet-answers".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let at = Instant::now();
                    match Answer::parse(&line) {
                        Some(a) => {
                            if tx.send((at, a)).is_err() {
                                break;
                            }
                        }
                        None => eprintln!("churn: unreadable fleet answer {line:?}"),
                    }
                }
            })
            .expect("start the fleet reader thread");
        Fleet {
            stdin,
            answers,
            _child: child,
        }
    }

    pub(super) fn send(&mut self, order: &Order) {
        writeln!(self.stdin, "{order}")
            .and_then(|()| self.stdin.flush())
            .expect("the fleet takes orders");
    }
}
