//! The CLI's connection to a running daemon: finds it through
//! `HOME/node.json`, authenticates mutating calls with `HOME/api-token`, and
//! turns API errors back into the daemon's own message and code.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Home;
use crate::config::NodeJson;

/// An error the user should see as-is, with a machine-readable code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub code: String,
    pub message: String,
}

impl UserError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// HTTP client for one node.
pub struct Client {
    pub base: String,
    token: Option<String>,
    pub http: reqwest::Client,
    home: Home,
}

impl Client {
    /// Connects to the node running on `home`.
    pub fn connect(home: &Home) -> Result<Client> {
        home.require_initialized()?;
        let text = std::fs::read_to_string(home.node_json()).map_err(|_| {
            UserError::new(
                "node_not_running",
                format!(
                    "no node is running on {}; start one with `packfed --home {} node run`",
                    home.root.display(),
                    home.root.display()
                ),
            )
        })?;
        let info: NodeJson = serde_json::from_str(&text).context("node.json is unreadable; restart the node")?;
        let token = std::fs::read_to_string(home.api_token())
            .ok()
            .map(|t| t.trim().to_string());
        Ok(Client {
            base: format!("http://{}", info.api),
            token,
            http: reqwest::Client::builder().build()?,
            home: home.clone(),
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        UserError::new(
            "node_not_running",
            format!(
                "the node on {} does not answer at {} ({e}); if it crashed, start it again with `packfed node run`",
                self.home.root.display(),
                self.base
            ),
        )
        .into()
    }

    /// Turns a non-success response into the daemon's error.
    pub async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message = body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("node answered {status}"));
        let code = body["code"].as_str().unwrap_or("node_error");
        Err(UserError::new(code, message).into())
    }

    async fn send_get(&self, path: &str) -> Result<reqwest::Response> {
        // The token goes on reads too: blob downloads need it.
        self.authed(self.http.get(format!("{}{}", self.base, path)))
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send_get(path).await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// GET returning None on 404.
    pub async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let resp = self.send_get(path).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(Self::check(resp).await?.json().await?))
    }

    pub fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn post_json<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        let req = self.authed(self.http.post(format!("{}{}", self.base, path)).json(body));
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// POSTs JSON and returns the successful response as it is (for bodies
    /// that are not JSON documents of ours).
    pub async fn post_json_raw(&self, path: &str, body: &Value) -> Result<reqwest::Response> {
        let req = self.authed(self.http.post(format!("{}{}", self.base, path)).json(body));
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        Self::check(resp).await
    }

    /// Streams a request body (publishing).
    pub async fn post_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: reqwest::Body,
    ) -> Result<T> {
        let mut req = self.authed(self.http.post(format!("{}{}", self.base, path)).body(body));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// Starts a streamed download.
    pub async fn download(&self, path: &str) -> Result<reqwest::Response> {
        let resp = self.send_get(path).await?;
        Self::check(resp).await
    }
}
