//! The `command` target: a subprocess per invocation, event on stdin, answer on stdout.
//!
//! Exit status 0 means the process answered: its stdout is classified like a 200 body, so
//! an error object printed by a runtime still counts as a function error. A non-zero exit
//! status is a function error; a process that cannot start was not reached.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Outcome, Reply, UNHANDLED, classify, timed_out};

pub struct CommandTarget {
    argv: Vec<String>,
    function_name: String,
    region: Option<String>,
    timeout: Duration,
}

impl CommandTarget {
    pub fn new(
        argv: Vec<String>,
        function_name: &str,
        region: Option<&str>,
        timeout: Duration,
    ) -> CommandTarget {
        CommandTarget {
            argv,
            function_name: function_name.to_string(),
            region: region.map(str::to_string),
            timeout,
        }
    }

    pub async fn invoke(&self, event: Bytes) -> Outcome {
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .env("AWS_LAMBDA_FUNCTION_NAME", &self.function_name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(region) = &self.region {
            command.env("AWS_REGION", region);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                return Outcome::CouldNotInvoke {
                    detail: format!("cannot start {:?}: {err}", self.argv[0]),
                };
            }
        };
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            // A handler may exit without reading all of its input: that is its business.
            let _ = stdin.write_all(&event).await;
        };
        let run = async {
            let (_, output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        match tokio::time::timeout(self.timeout, run).await {
            Err(_) => timed_out(self.timeout),
            Ok(Err(err)) => Outcome::CouldNotInvoke {
                detail: format!("cannot run {:?}: {err}", self.argv[0]),
            },
            Ok(Ok(output)) if output.status.success() => classify(Reply {
                status: 200,
                function_error: None,
                body: output.stdout,
            }),
            Ok(Ok(output)) => {
                let mut body = output.stdout;
                if body.iter().all(u8::is_ascii_whitespace) {
                    body = serde_json::to_vec(&serde_json::json!({
                        "errorType": "ProcessExit",
                        "errorMessage": format!("{} exited with {}", self.argv[0], output.status),
                    }))
                    .expect("a JSON literal serializes");
                }
                Outcome::FunctionError {
                    error_type: UNHANDLED.into(),
                    body,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> CommandTarget {
        CommandTarget::new(
            vec!["sh".into(), "-c".into(), script.into()],
            "f",
            Some("eu-west-1"),
            timeout,
        )
    }

    #[tokio::test]
    async fn stdin_in_stdout_out_with_the_lambda_environment() {
        let target = sh(
            r#"read -r line; printf '{"got":%s,"fn":"%s","region":"%s"}' "$line" "$AWS_LAMBDA_FUNCTION_NAME" "$AWS_REGION""#,
            Duration::from_secs(10),
        );
        let Outcome::Success { body } = target.invoke(Bytes::from_static(b"{\"a\":1}\n")).await
        else {
            panic!("expected success");
        };
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"got":{"a":1},"fn":"f","region":"eu-west-1"})
        );
    }

    #[tokio::test]
    async fn non_zero_exit_is_a_function_error() {
        let outcome = sh("cat >/dev/null; exit 3", Duration::from_secs(10))
            .invoke(Bytes::from_static(b"{}"))
            .await;
        assert!(
            matches!(outcome, Outcome::FunctionError { .. }),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_process_times_out_as_a_function_error() {
        let outcome = sh("sleep 5", Duration::from_millis(200))
            .invoke(Bytes::from_static(b"{}"))
            .await;
        assert_eq!(outcome, timed_out(Duration::from_millis(200)));
    }

    #[tokio::test]
    async fn a_missing_program_was_not_reached() {
        let target = CommandTarget::new(
            vec!["/nonexistent/handler".into()],
            "f",
            None,
            Duration::from_secs(1),
        );
        assert!(matches!(
            target.invoke(Bytes::from_static(b"{}")).await,
            Outcome::CouldNotInvoke { .. }
        ));
    }
}
