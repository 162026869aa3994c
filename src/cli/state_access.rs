//! How the offline CLI commands reach delivery state: the redb file
//! directly, or — while `ferry serve` holds it — the server's admin API,
//! found through `<data_dir>/server.json` and authorised by
//! `--admin-token` / `FERRY_ADMIN_TOKEN`.

use crate::data_dir::DataDir;
use crate::store::{StateStore, StoreError};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// Delivery state, local or through a running server.
pub(crate) enum StateAccess {
    /// The state file, opened by this process.
    Local(StateStore),
    /// A running server's admin API.
    Remote(Remote),
}

/// A running server's admin API.
pub(crate) struct Remote {
    url: String,
    token: String,
}

/// Opens the state of `data_dir`, going through the server when it runs.
pub(crate) fn open_state(data_dir: &Path, token: Option<&str>) -> Result<StateAccess> {
    let path = DataDir::new(data_dir).state();
    if !path.is_file() {
        bail!(
            "{} has no delivery state (state.redb): no destination has run there yet",
            data_dir.display()
        );
    }
    match StateStore::open(&path) {
        Ok(store) => Ok(StateAccess::Local(store)),
        Err(StoreError::Locked(_)) => Ok(StateAccess::Remote(Remote::find(data_dir, token)?)),
        Err(e) => Err(e.into()),
    }
}

impl Remote {
    fn find(data_dir: &Path, token: Option<&str>) -> Result<Remote> {
        let file = DataDir::new(data_dir).server_file();
        let Ok(text) = std::fs::read_to_string(&file) else {
            bail!(
                "a running ferry serve holds {} and its admin API is off: set admin_token in its configuration (then use --admin-token), or stop it",
                data_dir.display()
            );
        };
        let info: Value = serde_json::from_str(&text)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let url = info["admin_url"]
            .as_str()
            .context("server.json has no admin_url")?
            .to_string();
        let Some(token) = token else {
            bail!("a running ferry serve holds {}: pass --admin-token (or set FERRY_ADMIN_TOKEN) to act through its admin API at {url}, or stop it", data_dir.display());
        };
        Ok(Remote {
            url,
            token: token.to_string(),
        })
    }

    /// Calls the admin API; a non-2xx answer becomes an error with its message.
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method, format!("{}{path}", self.url))
                .bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!(
                    "the admin API answered {status}: {}",
                    v["message"].as_str().unwrap_or("no message")
                );
            }
            Ok(v)
        })
    }
}
