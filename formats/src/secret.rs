//! The text of a secret (an HSM PIN, a bearer token, a cloud secret key) that does not show
//! itself by accident: `Debug` prints `<redacted>`, so a configuration struct holding one
//! can derive `Debug` and be logged whole. There is no `Display` and no `Serialize`: the
//! text leaves only through [`Secret::expose`], a name to grep for.

use std::fmt;

#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What `Debug` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret's text, for the one place that must use it (a login, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret(text.to_string())
    }
}

/// For command-line parsers (`clap` takes any `FromStr`).
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            pin: Secret,
            token: Option<Secret>,
        }
        let h = Holder {
            pin: Secret::new("1234-pin"),
            token: Some("tok-abc".into()),
        };
        let shown = format!("{h:?} {h:#?}");
        assert!(
            !shown.contains("1234-pin") && !shown.contains("tok-abc"),
            "{shown}"
        );
        assert!(shown.contains(REDACTED));
        assert_eq!(h.pin.expose(), "1234-pin");
        let parsed: Secret = serde_json::from_str("\"s3\"").expect("a JSON string");
        assert_eq!(parsed.expose(), "s3");
    }
}
