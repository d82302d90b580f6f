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
        #[serde(deserialize_with = "metric_value")]
        value: f64,
        #[serde(default)]
        step: Option<u64>,
    },
    Result(ResultMsg),
}

/// A metric's value: a JSON number, or one of the strings `"nan"`, `"inf"`, `"-inf"` (any case;
/// `"infinity"` too), because JSON has no way to write those and a diverging training's NaN loss
/// is exactly what a sweep's pruning must see.
fn metric_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(f64),
        Text(String),
    }
    match Written::deserialize(d)? {
        Written::Number(v) => Ok(v),
        Written::Text(t) => match t.to_ascii_lowercase().as_str() {
            "nan" => Ok(f64::NAN),
            "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(serde::de::Error::custom(format!(
                "metric value `{t}` is not a number (nor \"nan\", \"inf\", \"-inf\")"
            ))),
        },
    }
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
    /// How to fix the error, apart from its message. Sent by `sluice __stage` (a built-in stage
    /// run on another machine) so its failure reads as it does in-process; plugins may omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
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

    fn metric(line: &str) -> Result<(String, f64, Option<u64>), String> {
        match parse_line(line) {
            Some(Ok(Message::Metric { name, value, step })) => Ok((name, value, step)),
            Some(Err(e)) => Err(e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn per_epoch_metrics_keep_their_step_and_non_finite_values_arrive_as_such() {
        assert_eq!(
            metric(r#"{"type":"metric","name":"val_loss","value":0.42,"step":5}"#),
            Ok(("val_loss".into(), 0.42, Some(5)))
        );
        // What the training worker sends for a value JSON cannot hold (Python's `str(x)`).
        let (_, v, step) =
            metric(r#"{"type":"metric","name":"val_loss","value":"nan","step":3}"#).unwrap();
        assert!(v.is_nan());
        assert_eq!(step, Some(3));
        for (text, want) in [
            ("inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
        ] {
            let line = format!(r#"{{"type":"metric","name":"x","value":"{text}"}}"#);
            assert_eq!(metric(&line).unwrap().1, want, "{text}");
        }
        let e = metric(r#"{"type":"metric","name":"x","value":"high"}"#).unwrap_err();
        assert!(e.contains("metric value `high` is not a number"), "{e}");
    }
}
