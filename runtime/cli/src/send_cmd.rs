//! `plexus send FILE... --to ADDR`: send messages over MLLP and show each answer. The
//! quickest way to try a running engine (or any MLLP receiver).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use plexus_hl7::Message;
use plexus_hl7::ack::AckCode;
use plexus_mllp::{SendError, Sender, SenderConfig};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Message files (one HL7 v2 message each), or `-` for one from stdin.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Where to send: an MLLP listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2575")]
    to: SocketAddr,
    /// Seconds to wait for each ACK.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    ack_timeout: u64,
    /// What an empty MSH-18 means in the files and the ACKs, as an interface's `charset`
    /// does: e.g. `8859/1` to send Latin-1 files that do not say so.
    #[arg(long, value_name = "CODE", value_parser = crate::parse_charset)]
    charset: Option<plexus_hl7::Charset>,
}

pub fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut sender = Sender::new(
        args.to.to_string(),
        SenderConfig {
            attempts: 1,
            ack_timeout: std::time::Duration::from_secs(args.ack_timeout),
            charset: args.charset.unwrap_or(plexus_hl7::Charset::Ascii),
            ..SenderConfig::default()
        },
    );
    let mut refused = 0;
    for file in &args.files {
        let label = crate::input_label(file);
        let bytes = crate::read_input(file)?;
        let (ack, accepted) = match runtime.block_on(sender.send(&bytes)) {
            Ok(delivery) => (delivery.ack, true),
            Err(SendError::Rejected { ack, .. } | SendError::ApplicationError { ack, .. }) => {
                (ack, false)
            }
            Err(other) => {
                // `{:#}` prints the error with its causes on one line.
                println!("{label}: {:#}", anyhow::Error::new(other));
                refused += 1;
                continue;
            }
        };
        let msg = Message::parse_with_charset(
            ack.bytes(),
            args.charset.unwrap_or(plexus_hl7::Charset::Ascii),
        )
        .ok();
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
            print!(" ({}: {reason})", get("ERR-3-1"));
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
