//! `pipewright user`, `pipewright group`, `pipewright role` and `pipewright token`: manage users, user groups
//! (who may decide approvals), role bindings and API tokens on a server (`--server URL --token-file FILE`, or
//! `PIPEWRIGHT_SERVER` / `PIPEWRIGHT_TOKEN`).

use super::remote::Remote;
use crate::StateArgs;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use std::path::PathBuf;
use std::process::ExitCode;

/// The server to manage.
#[derive(Args, Clone)]
pub struct ServerArgs {
    #[command(flatten)]
    state: StateArgs,
}

pub(crate) fn remote(s: &ServerArgs) -> anyhow::Result<Remote> {
    Remote::from_state(&s.state)?.context("give the server with --server URL (or PIPEWRIGHT_SERVER)")
}

pub(crate) fn table(items: &serde_json::Value, cols: &[&str]) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header(cols.iter().map(|c| c.to_uppercase()));
    for i in items["items"].as_array().into_iter().flatten() {
        t.add_row(cols.iter().map(|c| match &i[*c] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }));
    }
    println!("{t}");
}

/// `pipewright user …`.
#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user (the password is read from a file, or from stdin with `-`).
    Create {
        /// User name.
        name: String,
        /// File holding the password (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        /// E-mail.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a user (their tokens are revoked, their bindings removed).
    Delete {
        /// User name.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `pipewright group …`: user groups, at --org / --project (or `--account`).
#[derive(Subcommand)]
pub enum GroupCmd {
    /// Create a user group.
    Create {
        /// Identifier (approvals name it in `userGroups`; `org.ID` / `account.ID` at those scopes).
        identifier: String,
        /// A member (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// At account scope.
        #[arg(long)]
        account: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Set a user group's members (replacing them).
    Members {
        /// Identifier.
        identifier: String,
        /// A member (repeatable; none empties the group).
        #[arg(long = "user")]
        users: Vec<String>,
        /// At account scope.
        #[arg(long)]
        account: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List user groups.
    List {
        /// At account scope.
        #[arg(long)]
        account: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a user group.
    Delete {
        /// Identifier.
        identifier: String,
        /// At account scope.
        #[arg(long)]
        account: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `pipewright role …`.
#[derive(Subcommand)]
pub enum RoleCmd {
    /// List roles (built-in and custom) of a scope.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create a custom role at the scope given by --org / --project (`--account` for the account).
    Create {
        /// Identifier.
        identifier: String,
        /// A permission (repeatable), e.g. `pipeline:view`.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// At account scope.
        #[arg(long)]
        account: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Bind a role and a resource group to a user or service account (at --org / --project, or --account).
    Bind {
        /// Role identifier (`_pipeline_executor`, `_project_viewer`, `_project_admin`, …).
        role: String,
        /// The user.
        #[arg(long, conflicts_with = "service_account", required_unless_present = "service_account")]
        user: Option<String>,
        /// The service account.
        #[arg(long)]
        service_account: Option<String>,
        /// Resource group (default: every resource of the scope).
        #[arg(long)]
        resource_group: Option<String>,
        /// At account scope.
        #[arg(long)]
        account: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `pipewright token …`.
#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token for yourself or a service account; it is printed once.
    Create {
        /// A name to recognise it by.
        name: String,
        /// For this service account.
        #[arg(long)]
        service_account: Option<String>,
        /// Lifetime in days.
        #[arg(long)]
        expires_in_days: Option<i64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens (yours; all of them for admins).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn scope(account: bool, s: &ServerArgs) -> serde_json::Value {
    if account { serde_json::json!({}) } else { serde_json::json!({"org": s.state.org, "project": s.state.project}) }
}

/// `user`.
pub async fn user(c: UserCmd) -> anyhow::Result<ExitCode> {
    match c {
        UserCmd::Create { name, password_file, email, server } => {
            let pw = if password_file.as_os_str() == "-" {
                crate::credentials::trimmed(std::io::read_to_string(std::io::stdin())?)
            } else {
                crate::credentials::read_file(&password_file)
                    .with_context(|| format!("{}: cannot read", password_file.display()))?
            };
            let body = serde_json::json!({"username": name, "password": pw, "email": email});
            remote(&server)?.call(Method::POST, "/api/v1/users", Some(body)).await?;
            println!("created user {name}");
        }
        UserCmd::List { server } => table(
            &remote(&server)?.call(Method::GET, "/api/v1/users", None).await?,
            &["identifier", "email", "created_at"],
        ),
        UserCmd::Delete { name, server } => {
            remote(&server)?.call(Method::DELETE, &format!("/api/v1/users/{name}"), None).await?;
            println!("deleted user {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn scope_query(account: bool, s: &ServerArgs) -> String {
    if account { String::new() } else { format!("?org={}&project={}", s.state.org, s.state.project) }
}

/// `group`.
pub async fn group(c: GroupCmd) -> anyhow::Result<ExitCode> {
    match c {
        GroupCmd::Create { identifier, users, account, server } => {
            let mut body = scope(account, &server);
            body["identifier"] = identifier.clone().into();
            body["users"] = serde_json::json!(users);
            remote(&server)?.call(Method::POST, "/api/v1/user-groups", Some(body)).await?;
            println!("created user group {identifier}");
        }
        GroupCmd::Members { identifier, users, account, server } => {
            let path = format!("/api/v1/user-groups/{identifier}{}", scope_query(account, &server));
            remote(&server)?.call(Method::PUT, &path, Some(serde_json::json!({"users": users}))).await?;
            println!("user group {identifier}: {}", users.join(", "));
        }
        GroupCmd::List { account, server } => {
            let path = format!("/api/v1/user-groups{}", scope_query(account, &server));
            table(&remote(&server)?.call(Method::GET, &path, None).await?, &["identifier", "name", "users"]);
        }
        GroupCmd::Delete { identifier, account, server } => {
            let path = format!("/api/v1/user-groups/{identifier}{}", scope_query(account, &server));
            remote(&server)?.call(Method::DELETE, &path, None).await?;
            println!("deleted user group {identifier}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `role`.
pub async fn role(c: RoleCmd) -> anyhow::Result<ExitCode> {
    match c {
        RoleCmd::List { server } => {
            let q = format!("/api/v1/roles?org={}&project={}", server.state.org, server.state.project);
            table(&remote(&server)?.call(Method::GET, &q, None).await?, &["identifier", "name", "permissions"]);
        }
        RoleCmd::Create { identifier, permissions, account, server } => {
            let mut body = scope(account, &server);
            body["identifier"] = identifier.clone().into();
            body["permissions"] = serde_json::json!(permissions);
            remote(&server)?.call(Method::POST, "/api/v1/roles", Some(body)).await?;
            println!("created role {identifier}");
        }
        RoleCmd::Bind { role, user, service_account, resource_group, account, server } => {
            let principal = match (user, service_account) {
                (Some(u), _) => serde_json::json!({"kind": "user", "id": u}),
                (None, Some(s)) => serde_json::json!({"kind": "service_account", "id": s}),
                (None, None) => bail!("give --user or --service-account"),
            };
            let group = resource_group.unwrap_or_else(|| {
                if account {
                    "_all_resources_including_child_scopes".into()
                } else {
                    "_all_project_level_resources".into()
                }
            });
            let mut body = scope(account, &server);
            body["principal"] = principal;
            body["role"] = role.clone().into();
            body["resource_group"] = group.into();
            let b = remote(&server)?.call(Method::POST, "/api/v1/role-bindings", Some(body)).await?;
            println!("bound {role} (binding {})", b["identifier"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `token`.
pub async fn token(c: TokenCmd) -> anyhow::Result<ExitCode> {
    match c {
        TokenCmd::Create { name, service_account, expires_in_days, server } => {
            let body = serde_json::json!({"name": name, "service_account": service_account,
                "expires_in_seconds": expires_in_days.map(|d| d * 86_400)});
            let t = remote(&server)?.call(Method::POST, "/api/v1/tokens", Some(body)).await?;
            eprintln!("token {} created; it is shown once:", t["id"].as_str().unwrap_or_default());
            println!("{}", t["token"].as_str().unwrap_or_default());
        }
        TokenCmd::List { server } => table(
            &remote(&server)?.call(Method::GET, "/api/v1/tokens", None).await?,
            &["id", "name", "principal_kind", "principal_id", "expires_at", "revoked_at"],
        ),
        TokenCmd::Revoke { id, server } => {
            remote(&server)?.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await?;
            println!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
