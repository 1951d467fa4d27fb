//! RFC 9218's `Priority` request header: of its parameters only the
//! urgency matters here, `u=0` (most urgent) to `u=7`; a job's urgency
//! decides which of its upstream's waiting jobs starts first.

use http::HeaderMap;

/// The urgency of a request that says none (RFC 9218, 4.1).
pub(crate) const DEFAULT_URGENCY: u8 = 3;

/// The least urgent of the eight.
pub(crate) const LEAST_URGENT: u8 = 7;

/// The urgency the request's `Priority` header asks for, if it names a
/// valid one. The header is a structured-field dictionary: members split
/// by commas, across header lines too, the last `u` winning; a `u` that is
/// not an integer from 0 to 7 is ignored, as the RFC asks.
pub(crate) fn urgency(headers: &HeaderMap) -> Option<u8> {
    let members = headers
        .get_all(http::header::HeaderName::from_static("priority"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    let mut urgency = None;
    for member in members {
        let member = member.split(';').next().unwrap_or_default().trim();
        if let Some(("u", value)) = member.split_once('=') {
            urgency = value.parse::<u8>().ok().filter(|&u| u <= LEAST_URGENT);
        }
    }
    urgency
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[&str]) -> Option<u8> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("priority", v.parse().unwrap());
        }
        urgency(&headers)
    }

    #[test]
    fn reads_the_urgency_among_other_members() {
        assert_eq!(of(&["u=0"]), Some(0));
        assert_eq!(of(&["i, u=5"]), Some(5));
        assert_eq!(of(&[" u=2 ;x=1 , i"]), Some(2));
        assert_eq!(of(&["u=1", "u=6"]), Some(6), "the last one wins");
    }

    #[test]
    fn ignores_what_is_not_an_urgency() {
        assert_eq!(of(&[]), None);
        assert_eq!(of(&["i"]), None);
        assert_eq!(of(&["u=8"]), None);
        assert_eq!(of(&["u=-1"]), None);
        assert_eq!(of(&["u=high"]), None);
        assert_eq!(of(&["u=1, u=9"]), None, "a last invalid one counts as none");
    }
}
