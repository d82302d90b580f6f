//! The node's side of the plugin protocol: a stage's events as the JSON lines a plugin would
//! print (docs/plugins.md), and the final `result`. The submitter's executor reads them back
//! with `exec::protocol::parse_line`, so what the user sees is what an in-process run shows.

use crate::error::StageError;
use crate::events::Event;
use serde_json::{json, Value as Json};
use std::io::Write;

/// The protocol line for an event a stage emits; `None` for events a stage never sends.
pub(crate) fn line_for(event: &Event) -> Option<Json> {
    Some(match event {
        Event::StageProgress {
            done,
            total,
            unit,
            message,
            ..
        } => {
            json!({"type": "progress", "done": done, "total": total, "unit": unit, "message": message})
        }
        Event::StageLog { level, message, .. } => {
            json!({"type": "log", "level": level, "message": message})
        }
        Event::StageMetric {
            name, value, step, ..
        } => json!({"type": "metric", "name": name, "value": metric_value(*value), "step": step}),
        // The protocol has no warning message: a log at level `warning`, which the terminal
        // shows as a warning too.
        Event::Warning { message, .. } => {
            json!({"type": "log", "level": "warning", "message": message})
        }
        _ => return None,
    })
}

/// JSON has no NaN or infinity; the protocol spells them as strings (`exec::protocol`).
fn metric_value(v: f64) -> Json {
    if v.is_nan() {
        json!("nan")
    } else if v == f64::INFINITY {
        json!("inf")
    } else if v == f64::NEG_INFINITY {
        json!("-inf")
    } else {
        json!(v)
    }
}

/// The final message: `ok`, or the stage's error with its hint kept apart, so the submitter
/// reports the same text an in-process run would.
pub(crate) fn result_line(outcome: &Result<(), StageError>) -> Json {
    match outcome {
        Ok(()) => json!({"type": "result", "status": "ok"}),
        Err(e) => {
            json!({"type": "result", "status": "error", "message": e.message, "hint": e.hint})
        }
    }
}

/// Writes one line and flushes it, so the submitter sees progress as it happens. A closed
/// stdout (the submitter gone) is not the stage's problem: the lines are dropped.
pub(crate) fn write_line(out: &mut dyn Write, line: &Json) {
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::protocol::{parse_line, Message};

    fn round_trip(event: Event) -> Message {
        let line = line_for(&event).unwrap().to_string();
        parse_line(&line).unwrap().unwrap()
    }

    #[test]
    fn events_read_back_as_the_protocol_messages_they_came_from() {
        let m = round_trip(Event::StageMetric {
            stage: "t".into(),
            name: "val_loss".into(),
            value: f64::NAN,
            step: Some(3),
        });
        assert!(
            matches!(m, Message::Metric { ref name, value, step: Some(3) } if name == "val_loss" && value.is_nan()),
            "{m:?}"
        );
        let m = round_trip(Event::StageProgress {
            stage: "t".into(),
            done: 2.0,
            total: Some(5.0),
            unit: Some("epoch".into()),
            message: None,
        });
        assert!(
            matches!(m, Message::Progress { done, total: Some(t), .. } if done == 2.0 && t == 5.0),
            "{m:?}"
        );
        let m = round_trip(Event::Warning {
            stage: Some("t".into()),
            message: "careful".into(),
        });
        assert!(
            matches!(m, Message::Log { ref level, ref message } if level == "warning" && message == "careful"),
            "{m:?}"
        );
    }

    #[test]
    fn an_error_result_keeps_message_and_hint_apart() {
        let line = result_line(&Err(StageError::new("bad column").hint("rename it")));
        match parse_line(&line.to_string()) {
            Some(Ok(Message::Result(r))) => {
                assert!(!r.is_ok());
                assert_eq!(r.message.as_deref(), Some("bad column"));
                assert_eq!(r.hint.as_deref(), Some("rename it"));
            }
            other => panic!("{other:?}"),
        }
    }
}
