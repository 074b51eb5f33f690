//! `plexus send FILE... --to ADDR`: send messages over MLLP and show each answer. The
//! quickest way to try a running engine (or any MLLP receiver).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use std::time::Duration;

use plexus_hl7::Message;
use plexus_hl7::ack::{AckCode, AckMode, Condition};
use plexus_mllp::{AttemptError, Delivery, SendError, Sender, SenderConfig};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Message files (one HL7 v2 message each), or `-` for one from stdin.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Where to send: an MLLP listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2575")]
    to: SocketAddr,
    /// Seconds to wait for each ACK. A message whose MSH-15 asks for an answer only on
    /// an error (`ER`) or only on success (`SU`) waits 2 s at most; one that asks never
    /// to be answered (`NE`) a quarter of a second.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    ack_timeout: u64,
    /// What an empty MSH-18 means in the files and the ACKs, as an interface's `charset`
    /// does: e.g. `8859/1` to send Latin-1 files that do not say so.
    #[arg(long, value_name = "CODE", value_parser = crate::parse_charset)]
    charset: Option<plexus_hl7::Charset>,
}

/// How long to wait for an answer MSH-15 says may not come (`NE`, `ER`, `SU`): a
/// receiver answers at once when it answers at all.
const UNASKED_WAIT: Duration = Duration::from_secs(2);

pub fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let charset = args.charset.unwrap_or(plexus_hl7::Charset::Ascii);
    let sender_with = |ack_timeout| {
        Sender::new(
            args.to.to_string(),
            SenderConfig {
                attempts: 1,
                ack_timeout,
                charset,
                ..SenderConfig::default()
            },
        )
    };
    let ack_timeout = Duration::from_secs(args.ack_timeout);
    let mut sender = sender_with(ack_timeout);
    // For messages that ask for an answer only sometimes (or never): a shorter wait.
    let unasked_wait = ack_timeout.min(UNASKED_WAIT);
    let mut unasked = sender_with(unasked_wait);
    let mut refused = 0;
    for file in &args.files {
        let label = crate::input_label(file);
        let bytes = crate::read_input(file)?;
        let asked = Message::parse_with_charset(&bytes, charset)
            .ok()
            .map_or(Condition::Always, |m| AckMode::of(&m).accept());
        let sending = match asked {
            Condition::Always => &mut sender,
            _ => &mut unasked,
        };
        let (ack, accepted) = match runtime.block_on(sending.send(&bytes)) {
            Ok(Delivery { ack: Some(ack), .. }) => (ack, true),
            Ok(Delivery { ack: None, .. }) => {
                // MSH-15 NE (not waited for), or ER and no answer came: accepted.
                if asked == Condition::Never {
                    println!(
                        "{label}: sent; MSH-15 is NE (never answer), and no answer came within {} s",
                        SenderConfig::default().ne_wait.as_secs_f64()
                    );
                } else {
                    println!(
                        "{label}: sent; MSH-15 is ER (answer only on an error), and no answer came within {} s",
                        unasked_wait.as_secs_f64()
                    );
                }
                continue;
            }
            Err(SendError::Rejected { ack, .. } | SendError::ApplicationError { ack, .. }) => {
                (ack, false)
            }
            Err(SendError::Exhausted {
                last: AttemptError::AckTimeout,
                ..
            }) if asked == Condition::OnSuccess => {
                println!(
                    "{label}: no answer within {} s; MSH-15 is SU (answer only when accepted), so it was not accepted",
                    unasked_wait.as_secs_f64()
                );
                refused += 1;
                continue;
            }
            Err(other) => {
                // `{:#}` prints the error with its causes on one line.
                println!("{label}: {:#}", anyhow::Error::new(other));
                refused += 1;
                continue;
            }
        };
        let msg = Message::parse_with_charset(ack.bytes(), charset).ok();
        let get = |path: &str| {
            msg.as_ref()
                .and_then(|m| m.get(path).ok().flatten())
                .map(|v| v.into_owned())
                .unwrap_or_default()
        };
        let code = ack.code();
        print!("{label}: {} for {}", code.as_str(), get("MSA-2"));
        let reason = get("ERR-8");
        if !reason.is_empty() {
            // Where, from ERR-2 (segment^sequence^field^repetition^component), as a path
            // such as `SCH-25-1`.
            let (segment, field, component) = (get("ERR-2-1"), get("ERR-2-3"), get("ERR-2-5"));
            let at = match (segment.is_empty(), field.is_empty(), component.is_empty()) {
                (false, false, false) => format!(" at {segment}-{field}-{component}"),
                (false, false, true) => format!(" at {segment}-{field}"),
                (false, true, _) => format!(" at {segment}"),
                _ => String::new(),
            };
            print!(" ({}{at}: {reason})", get("ERR-3-1"));
        }
        println!();
        if !accepted || !matches!(code, AckCode::AA | AckCode::CA) {
            refused += 1;
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
