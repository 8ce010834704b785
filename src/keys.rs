//! `subscriberd keys create|list|revoke`: through the running server's admin
//! socket when one answers, else on the store directly.

use std::path::Path;

use subscriber_store::{Config, Store};

use crate::admin::{self, Request, Response};
use crate::cli::KeysCommand;

pub fn run(command: KeysCommand) -> Result<(), String> {
    let (data, request) = match command {
        KeysCommand::Create { data, environment } => (data, Request::Create { environment }),
        KeysCommand::List { data } => (data, Request::List),
        KeysCommand::Revoke { data, id } => (data, Request::Revoke { id }),
    };
    let response = match admin::send(&data, &request) {
        Some(answer) => answer.map_err(|e| format!("the running server did not answer: {e}"))?,
        None => admin::apply(&open(&data)?, request),
    };
    match response {
        Response::Created { secret } => println!("{secret}"),
        Response::Listed { keys } => {
            println!("{:<24}  {:<16}  {:<8}  created", "id", "environment", "key");
            for k in keys {
                println!(
                    "{:<24}  {:<16}  {:<8}  {}",
                    k.id, k.environment, k.hint, k.created_at
                );
            }
        }
        Response::Revoked => eprintln!("revoked"),
        Response::Failed { error } => return Err(error),
    }
    Ok(())
}

fn open(data: &Path) -> Result<Store, String> {
    if !data.exists() {
        return Err(format!(
            "no data directory at {}; start the server once, or pass --data",
            data.display()
        ));
    }
    Store::open(Config::new(data)).map_err(|e| {
        format!(
            "cannot open {} ({e}); if a server is running on it, its admin socket did not answer",
            data.display()
        )
    })
}
