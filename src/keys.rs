//! `subscriberd keys create|list|revoke`: through the running server's admin
//! socket when one answers, else on the store directly.

use std::path::Path;

use subscriber_store::{Config, Store};

use crate::admin::{self, Request, Response};
use crate::cli::{KeysCommand, ServerKeyArgs};
use crate::server_key;

pub fn run(command: KeysCommand) -> Result<(), String> {
    let (data, request, key_args) = match command {
        KeysCommand::Create {
            data,
            environment,
            server_key,
        } => (data, Request::Create { environment }, Some(server_key)),
        KeysCommand::List { data } => (data, Request::List, None),
        KeysCommand::Revoke { data, id } => (data, Request::Revoke { id }, None),
    };
    let response = match admin::send(&data, &request) {
        Some(answer) => answer.map_err(|e| format!("the running server did not answer: {e}"))?,
        None => admin::apply(&open(&data, key_args.as_ref())?, request),
    };
    match response {
        // Only the secret on stdout, so scripts can take it as it is.
        Response::Created {
            secret,
            environment,
            identifier,
        } => {
            println!("{secret}");
            if !identifier.is_empty() {
                eprintln!(
                    "A key of the {environment} environment; its application identifier (the Inbox's applicationIdentifier) is {identifier}"
                );
            }
        }
        Response::Listed { keys } => {
            println!(
                "{:<24}  {:<16}  {:<14}  {:<8}  created",
                "id", "environment", "app identifier", "key"
            );
            for k in keys {
                println!(
                    "{:<24}  {:<16}  {:<14}  {:<8}  {}",
                    k.id, k.environment, k.identifier, k.hint, k.created_at
                );
            }
        }
        Response::Revoked => eprintln!("revoked"),
        Response::Failed { error } => return Err(error),
    }
    Ok(())
}

/// The store itself, with the server key a new key is sealed under
/// (`key_args`: the command creates a key) if there is one.
fn open(data: &Path, key_args: Option<&ServerKeyArgs>) -> Result<Store, String> {
    if !data.exists() {
        return Err(format!(
            "no data directory at {}; start the server once, or pass --data",
            data.display()
        ));
    }
    let mut config = Config::new(data);
    if let Some(args) = key_args {
        if let Some(loaded) = server_key::load(args, Some(data))? {
            if let Some(path) = &loaded.created {
                eprintln!("{}", server_key::created_message(path));
            }
            config = config.server_key(loaded.key);
        }
    }
    Store::open(config).map_err(|e| {
        format!(
            "cannot open {} ({e}); if a server is running on it, its admin socket did not answer",
            data.display()
        )
    })
}
