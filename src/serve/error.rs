//! [`ServeError`]: a request that cannot be answered, with the HTTP status it maps to. Its body
//! is the protocol's `{"error": "..."}`.

/// A failed request: the status and a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServeError {
    pub status: u16,
    pub message: String,
}

impl ServeError {
    /// The request is malformed or does not fit the model: 400.
    pub(crate) fn bad_request(message: impl Into<String>) -> ServeError {
        ServeError {
            status: 400,
            message: message.into(),
        }
    }

    /// No such model, version or route: 404.
    pub(crate) fn not_found(message: impl Into<String>) -> ServeError {
        ServeError {
            status: 404,
            message: message.into(),
        }
    }

    /// Something failed on the server's side: 500.
    pub(crate) fn internal(message: impl Into<String>) -> ServeError {
        ServeError {
            status: 500,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "error": self.message })).expect("JSON serializes")
    }
}
