//! `object_store` errors said briefly and without secrets. Its messages carry the full request
//! URL (with any user info in it) and the response body; sluice says what kind of failure it
//! was, the HTTP status, and nothing from the request itself.

use object_store::client::{HttpError, HttpErrorKind};

/// A short reason: "401 Unauthorized", "connection refused", "timed out", "not found"...
pub(crate) fn error(e: &object_store::Error) -> String {
    use object_store::Error as E;
    let status = status_in(e);
    let kind = match e {
        E::NotFound { .. } => Some("not found"),
        E::Unauthenticated { .. } => Some("401 Unauthorized: wrong or missing credentials"),
        E::PermissionDenied { .. } => Some("403 Forbidden: the credentials may not do this"),
        E::Precondition { .. } => Some("precondition failed"),
        E::AlreadyExists { .. } => Some("already exists"),
        E::NotImplemented { .. } | E::NotSupported { .. } => Some("not supported by this server"),
        _ => None,
    };
    if let Some(k) = kind {
        return k.to_string();
    }
    if let Some(s) = status {
        return s;
    }
    if let Some(k) = transport(e) {
        return k;
    }
    if let Some(io) = find::<std::io::Error>(e) {
        return io.to_string();
    }
    "request failed".to_string()
}

/// Whether the failure means the remote is unusable for this run (anything but a miss).
pub(crate) fn is_miss(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

fn transport(e: &object_store::Error) -> Option<String> {
    let h = find::<HttpError>(e)?;
    let what = match h.kind() {
        HttpErrorKind::Connect => {
            // The io error underneath says refused / unreachable / no such host.
            let detail = find::<std::io::Error>(h).map(|io| io.to_string());
            return Some(match detail {
                Some(d) => format!("cannot connect: {d}"),
                None => "cannot connect".to_string(),
            });
        }
        HttpErrorKind::Timeout => "timed out",
        HttpErrorKind::Interrupted => "connection interrupted",
        HttpErrorKind::Decode => "unreadable response",
        HttpErrorKind::Request => "request failed",
        _ => "request failed",
    };
    Some(what.to_string())
}

/// "405 Method Not Allowed" from the retry error's text, which is the only place the status of
/// an unmapped response is exposed; the text around it (URL, body) is dropped.
fn status_in(e: &object_store::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if let Some(at) = text.find("status code: ") {
            let rest = &text[at + "status code: ".len()..];
            let code: String = rest.chars().take_while(|ch| *ch != ':').collect();
            let code = code.trim();
            if code.len() >= 3 && code.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                return Some(code.chars().take(40).collect());
            }
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_variants_say_what_went_wrong_without_the_path() {
        let e = object_store::Error::Unauthenticated {
            path: "http://u:hunter2@h/x".into(),
            source: "body".into(),
        };
        let s = error(&e);
        assert!(s.starts_with("401") && !s.contains("hunter2"), "{s}");
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "y".into(),
        };
        assert!(is_miss(&nf));
        assert_eq!(error(&nf), "not found");
    }

    #[test]
    fn a_status_in_the_message_is_kept_and_the_rest_dropped() {
        let e = object_store::Error::Generic {
            store: "HTTP",
            source: "Error performing PUT http://u:hunter2@h/x in 1ms - Server returned non-2xx status code: 405 Method Not Allowed: <html>".into(),
        };
        assert_eq!(error(&e), "405 Method Not Allowed");
    }
}
