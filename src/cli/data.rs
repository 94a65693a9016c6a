//! `kv get|set|del|cas`: one request through the client library.

use std::io::Read;
use std::process::ExitCode;

use serde_json::json;

use super::{fail, Cli, Command, Output, EXIT_NO};
use crate::client::{CallOptions, Client, ClientError, Value};
use crate::clock::Version;

fn version_json(v: Version) -> serde_json::Value {
    json!({"hlc": v.hlc, "node_id": v.node_id})
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn client_error(e: ClientError) -> ExitCode {
    fail(e)
}

pub async fn run(cli: &Cli) -> ExitCode {
    let client =
        match cli.connect_options().and_then(|o| Client::connect(&cli.endpoints, &o).map_err(|e| e.to_string())) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
    let opts = CallOptions::new(cli.consistency).timeout(cli.timeout);
    match &cli.command {
        Command::Get { key } => match client.get(key.as_bytes(), opts).await {
            Ok(Some(Value { value, version })) => {
                match cli.output {
                    Output::Text => {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&value).and_then(|_| out.write_all(b"\n"));
                    }
                    Output::Json => println!(
                        "{}",
                        json!({"key": key, "found": true, "value": text(&value), "version": version_json(version)})
                    ),
                }
                ExitCode::SUCCESS
            }
            Ok(None) => {
                if cli.output == Output::Json {
                    println!("{}", json!({"key": key, "found": false}));
                }
                eprintln!("not found: {key}");
                ExitCode::from(EXIT_NO)
            }
            Err(e) => client_error(e),
        },
        Command::Set { key, value } => {
            let value = match value {
                Some(v) => v.clone().into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
                        return fail(format!("cannot read the value from stdin: {e}"));
                    }
                    buf
                }
            };
            match client.set(key.as_bytes(), &value, opts).await {
                Ok(v) => ok(cli, key, v),
                Err(e) => client_error(e),
            }
        }
        Command::Del { key } => match client.delete(key.as_bytes(), opts).await {
            Ok(v) => ok(cli, key, v),
            Err(e) => client_error(e),
        },
        Command::Cas { key, expect, expect_absent, new } => {
            let expected = if *expect_absent { None } else { expect.as_deref().map(str::as_bytes) };
            match client.cas(key.as_bytes(), expected, new.as_bytes(), opts).await {
                Ok(o) => {
                    if cli.output == Output::Json {
                        let current = o
                            .current
                            .as_ref()
                            .map(|c| json!({"value": text(&c.value), "version": version_json(c.version)}));
                        println!("{}", json!({"key": key, "swapped": o.swapped, "current": current}));
                    } else if o.swapped {
                        println!("OK");
                    }
                    if o.swapped {
                        ExitCode::SUCCESS
                    } else {
                        match &o.current {
                            Some(c) => eprintln!("compare failed: current value of {key} is {:?}", text(&c.value)),
                            None => eprintln!("compare failed: {key} does not exist"),
                        }
                        ExitCode::from(EXIT_NO)
                    }
                }
                Err(e) => client_error(e),
            }
        }
        // Listed, not `_`: a new subcommand must be placed here or in `cli::run`.
        Command::Serve(_)
        | Command::Dev(_)
        | Command::Cluster { .. }
        | Command::Topic { .. }
        | Command::Check { .. }
        | Command::Bench(_)
        | Command::Jepsen { .. } => fail("internal error: not a data command (get, set, del or cas)"),
    }
}

fn ok(cli: &Cli, key: &str, v: Version) -> ExitCode {
    match cli.output {
        Output::Text => println!("OK"),
        Output::Json => println!("{}", json!({"key": key, "version": version_json(v)})),
    }
    ExitCode::SUCCESS
}
