//! The JSON stage protocol spoken by plugin executables (and by the training worker): one request
//! object on stdin, then JSON lines on stdout. See docs/plugins.md.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const PROTOCOL_VERSION: u32 = 1;

/// Written to the plugin's stdin, followed by end of file.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub protocol: u32,
    pub stage: &'a str,
    pub kind: &'a str,
    pub workspace: PathBuf,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    pub with: &'a Json,
    pub params: &'a BTreeMap<String, Json>,
    pub scratch: PathBuf,
    pub devices: Devices,
}

#[derive(Debug, Serialize)]
pub struct Devices {
    /// GPU identifiers, as `CUDA_VISIBLE_DEVICES` (also set) names them.
    pub gpus: Vec<String>,
}

/// One line on the plugin's stdout.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Progress {
        done: f64,
        #[serde(default)]
        total: Option<f64>,
        #[serde(default)]
        unit: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    Log {
        #[serde(default = "info")]
        level: String,
        message: String,
    },
    Metric {
        name: String,
        value: f64,
        #[serde(default)]
        step: Option<u64>,
    },
    Result(ResultMsg),
}

fn info() -> String {
    "info".to_string()
}

/// The final message: success, or an error the plugin explains itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResultMsg {
    #[serde(default = "ok")]
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, Json>,
}

fn ok() -> String {
    "ok".to_string()
}

impl ResultMsg {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// Parses one stdout line: `Some(Ok)` for a protocol message, `Some(Err)` for a JSON object
/// that is not one, `None` for plain text.
pub fn parse_line(line: &str) -> Option<Result<Message, String>> {
    let t = line.trim();
    if !t.starts_with('{') {
        return None;
    }
    let v: Json = serde_json::from_str(t).ok()?;
    v.get("type")?;
    Some(serde_json::from_value(v).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages() {
        match parse_line(r#"{"type":"progress","done":3,"total":10,"unit":"epoch"}"#) {
            Some(Ok(Message::Progress { done, total, .. })) => {
                assert_eq!(done, 3.0);
                assert_eq!(total, Some(10.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_line("hello").is_none());
        assert!(matches!(
            parse_line(r#"{"type":"metric","name":"x"}"#),
            Some(Err(_))
        ));
        match parse_line(r#"{"type":"result","status":"error","message":"bad"}"#) {
            Some(Ok(Message::Result(r))) => assert!(!r.is_ok()),
            other => panic!("{other:?}"),
        }
    }
}
