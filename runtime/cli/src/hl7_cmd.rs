//! `plexus hl7 parse`: a person's view of a message.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use plexus_hl7::{Batch, Element, Level, Message};
use serde_json::{Map, Value, json};

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// The message file (`-` reads stdin). A file holding several messages, or an
    /// FHS/BHS batch, prints a JSON array with one tree per message.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print only the value at this path, e.g. `PID-5-1`, `PID-3[2]-4`, `OBX[3]-5`.
    /// A path above the leaf prints its first leaf (PID-5 = PID-5[1]-1-1).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// With --path: print the raw encoded bytes at that level instead of the decoded value
    /// (e.g. the whole field with its components and repetitions).
    #[arg(long, requires = "path")]
    raw: bool,
    /// What an empty MSH-18 means, as an interface's `charset` does: e.g. `8859/1` for a
    /// sender that sends Latin-1 without saying so. A declared MSH-18 still wins.
    #[arg(long, value_name = "CODE", value_parser = crate::parse_charset)]
    charset: Option<plexus_hl7::Charset>,
}

pub fn parse(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let bytes = crate::read_input(&args.file)?;
    let label = crate::input_label(&args.file);
    let batch =
        Batch::parse(&bytes).with_context(|| format!("{label}: not a valid HL7 v2 message"))?;
    let charset = args.charset.unwrap_or(plexus_hl7::Charset::Ascii);
    let messages = batch
        .raw_messages()
        .map(|raw| Message::parse_with_charset(raw, charset))
        .enumerate()
        .map(|(i, m)| {
            m.with_context(|| {
                let which = if batch.len() > 1 {
                    format!(" (message {})", i + 1)
                } else {
                    String::new()
                };
                format!("{label}{which}: not a valid HL7 v2 message")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        !messages.is_empty(),
        "{label}: no MSH segment, so no message"
    );

    if let Some(path) = &args.path {
        return print_path(&messages, path, args.raw);
    }
    let trees: Vec<Value> = messages.iter().map(message_json).collect();
    let out = if trees.len() == 1 {
        trees.into_iter().next().unwrap_or_default()
    } else {
        Value::Array(trees)
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn print_path(messages: &[Message<'_>], path: &str, raw: bool) -> anyhow::Result<ExitCode> {
    let mut found = false;
    for msg in messages {
        let value = if raw {
            msg.get_raw(path)?
                .map(|b| String::from_utf8_lossy(b).into_owned())
        } else {
            msg.get(path)?.map(|c| c.into_owned())
        };
        match value {
            Some(v) => {
                println!("{v}");
                found = true;
            }
            // Keep one line per message so outputs of a multi-message file line up.
            None if messages.len() > 1 => println!(),
            None => {}
        }
    }
    if !found {
        eprintln!("{path}: no value");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The message as JSON: a summary, then each segment with its fields keyed by path
/// (`PID-5`, `OBX[2]-5`), so any key can be given back to `--path`.
fn message_json(msg: &Message<'_>) -> Value {
    let d = msg.delimiters();
    let mut seen = std::collections::HashMap::<&str, u32>::new();
    let segments: Vec<Value> = msg
        .segments()
        .map(|seg| {
            let occurrence = seen.entry(seg.name()).and_modify(|n| *n += 1).or_insert(1);
            let prefix = if *occurrence == 1 {
                seg.name().to_owned()
            } else {
                format!("{}[{occurrence}]", seg.name())
            };
            let fields: Map<String, Value> = seg
                .fields()
                .filter(|(_, f)| !f.is_empty())
                .map(|(n, f)| (format!("{prefix}-{n}"), element_json(&f)))
                .collect();
            json!({ "segment": seg.name(), "fields": fields })
        })
        .collect();
    json!({
        "message_type": msg.get("MSH-9-1").ok().flatten(),
        "trigger_event": msg.get("MSH-9-2").ok().flatten(),
        "control_id": msg.control_id(),
        "version": msg.version(),
        "charset": msg.charset().code(),
        "delimiters": String::from_utf8_lossy(&[&[d.field][..], &d.encoding_characters()].concat()),
        "segments": segments,
    })
}

/// A leaf is a string; repetitions are an array; components and subcomponents are
/// objects keyed by their 1-based position (empty ones left out).
fn element_json(el: &Element<'_>) -> Value {
    if !el.is_composite() {
        return Value::String(el.text().into_owned());
    }
    let children: Vec<Element<'_>> = el.children().collect();
    match el.level() {
        Level::Field if children.len() == 1 => element_json(&children[0]),
        Level::Field => Value::Array(children.iter().map(element_json).collect()),
        _ => Value::Object(
            children
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.is_empty())
                .map(|(i, c)| ((i + 1).to_string(), element_json(c)))
                .collect(),
        ),
    }
}
