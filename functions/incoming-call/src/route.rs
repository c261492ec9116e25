//! The function's routes: the last path segment and its query, built into the TwiML links and
//! parsed from the request here and nowhere else.
//!
//! Every query parameter is ours: Twilio requests the `action`/`url` we gave it, and that URL is
//! what it signs, so after the signature check the values can be trusted. They are still parsed
//! strictly: an unknown, repeated or malformed parameter is a 400 (it cannot come from a link we
//! built). A well-formed step address that the current flow no longer has (the flow changed
//! mid-call) is not an error here; the flow answers it by starting the call over.

use std::fmt;

use twilio_voice::ledger::{ALERT_KEY_PREFIX, IdempotencyKey};
use twilio_voice::phone::PhoneNumber;

/// Deepest menu nesting, and so the most keys in a step address.
pub const MAX_KEYS: usize = 3;

/// One key of the phone's keypad: `0`-`9`, `*` or `#`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(u8);

impl Key {
    pub fn parse(text: &str) -> Option<Self> {
        match text.as_bytes() {
            [b @ (b'0'..=b'9' | b'*' | b'#')] => Some(Self(*b)),
            _ => None,
        }
    }
    pub fn as_char(self) -> char {
        self.0 as char
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// Which root step of a flow a call was routed to when it came in (read once per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branch {
    /// `then`: no schedule.
    Main,
    /// `schedule.open`
    Open,
    /// `schedule.after_hours`
    AfterHours,
    /// `schedule.holiday`: a national holiday or a `closed` date.
    Holiday,
    /// `anonymous`: the caller withheld their number.
    Anonymous,
}

impl Branch {
    fn letter(self) -> char {
        match self {
            Self::Main => 'm',
            Self::Open => 'o',
            Self::AfterHours => 'c',
            Self::Holiday => 'h',
            Self::Anonymous => 'a',
        }
    }
    fn from_letter(c: u8) -> Option<Self> {
        Some(match c {
            b'm' => Self::Main,
            b'o' => Self::Open,
            b'c' => Self::AfterHours,
            b'h' => Self::Holiday,
            b'a' => Self::Anonymous,
            _ => return None,
        })
    }
}

/// Where a step sits in the flow document: which number's flow (0 the default, then
/// `numbers` in order), which root branch, and the menu keys pressed to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepPath {
    pub flow: u8,
    pub branch: Branch,
    keys: [Option<Key>; MAX_KEYS],
}

impl StepPath {
    pub fn root(flow: u8, branch: Branch) -> Self {
        Self {
            flow,
            branch,
            keys: [None; MAX_KEYS],
        }
    }
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.keys.iter().map_while(|k| *k)
    }
    pub fn depth(&self) -> usize {
        self.keys().count()
    }
    /// The step one key further; `None` past [`MAX_KEYS`].
    pub fn child(&self, key: Key) -> Option<Self> {
        let depth = self.depth();
        let mut next = self.clone();
        *next.keys.get_mut(depth)? = Some(key);
        Some(next)
    }
    pub fn parent(&self) -> Option<Self> {
        let depth = self.depth().checked_sub(1)?;
        let mut up = self.clone();
        up.keys[depth] = None;
        Some(up)
    }
    fn encode(&self) -> String {
        let mut s = format!("{}{}", self.flow, self.branch.letter());
        s.extend(self.keys().map(Key::as_char));
        s
    }
    fn decode(text: &str) -> Option<Self> {
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (flow, rest) = text.split_at(split);
        if flow.is_empty() || flow.len() > 3 {
            return None;
        }
        let mut path = Self::root(flow.parse().ok()?, Branch::from_letter(rest.as_bytes()[0])?);
        for (i, b) in rest[1..].bytes().enumerate() {
            let key = Key::parse(std::str::from_utf8(&[b]).ok()?)?;
            *path.keys.get_mut(i)? = Some(key);
        }
        Some(path)
    }
}

/// The caller as the screening leg announces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Number(PhoneNumber),
    Withheld,
}

impl Caller {
    /// Twilio's `From`: withheld callers arrive as `anonymous`, `Anonymous`, `Restricted`,
    /// `+266696687`, `+86282452253` or nothing; anything that is not E.164 is unknown too.
    pub fn from_param(from: Option<&str>) -> Self {
        let from = from.unwrap_or("").trim();
        let withheld = from.is_empty()
            || ["anonymous", "restricted", "unknown", "unavailable"]
                .iter()
                .any(|w| from.eq_ignore_ascii_case(w))
            || matches!(from, "+266696687" | "+86282452253");
        match PhoneNumber::parse(from) {
            Ok(number) if !withheld => Self::Number(number),
            _ => Self::Withheld,
        }
    }
    fn encode(&self) -> &str {
        match self {
            Self::Number(n) => n.as_str(),
            Self::Withheld => "withheld",
        }
    }
    fn decode(text: &str) -> Option<Self> {
        if text == "withheld" {
            return Some(Self::Withheld);
        }
        PhoneNumber::parse(text).ok().map(Self::Number)
    }
}

/// A request this function answers, with everything its query carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/` or `/voice`: a call comes in.
    Answer,
    /// `/menu?at=&tries=`: a menu's `<Gather>` result (no `Digits`: nothing was pressed).
    Menu { at: StepPath, tries: u8 },
    /// `/dial-result?at=&n=`: the `n`-th number of a forward has ended.
    DialResult { at: StepPath, hunt: u8 },
    /// `/screen?at=&from=`: the forwarded leg answered; what the callee hears first.
    Screen { at: StepPath, caller: Caller },
    /// `/screen-result`: the key the callee pressed.
    ScreenResult,
    /// `/voicemail?at=`: a recording has ended.
    Voicemail { at: StepPath },
    /// `/status`: a status callback.
    Status,
    /// `/alert?key=&prompt=`: an alert call's message and keypad prompt, the `prompt`-th time
    /// (from 1). `key` is the alert step's request key, `alert:<alert_id>:<attempt>`; the task
    /// token stays in the ledger under it, never in a URL.
    Alert { key: IdempotencyKey, prompt: u8 },
    /// `/alert-keys?key=&prompt=`: the key pressed at that prompt.
    AlertKeys { key: IdempotencyKey, prompt: u8 },
    /// `/transcription`: a voicemail's transcription (`<Record transcribeCallback>`).
    Transcription,
}

/// Why a path or query is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route for this path")]
    NotFound,
    #[error("malformed query for this route")]
    BadQuery,
}

impl Route {
    /// The route named by the path's last segment and its query, and the path before that
    /// segment (kept in the links so a function served under a prefix links back to itself).
    pub fn parse<'p>(raw_path: &'p str, query: &str) -> Result<(Self, &'p str), RouteError> {
        let trimmed = raw_path.trim_end_matches('/');
        let (prefix, last) = match trimmed.rsplit_once('/') {
            _ if trimmed.is_empty() => ("", "voice"),
            Some(split) => split,
            None => return Err(RouteError::NotFound),
        };
        // The answer and status URLs are the number's own; a GET there carries Twilio's call
        // parameters in the query, which are not ours to check.
        let route = match last {
            "voice" => return Ok((Self::Answer, prefix)),
            "status" => return Ok((Self::Status, prefix)),
            "menu" | "dial-result" | "screen" | "screen-result" | "voicemail" | "transcription"
            | "alert" | "alert-keys" => last,
            _ => return Err(RouteError::NotFound),
        };
        let q = Query::parse(query)?;
        let route = match route {
            "menu" => {
                let (at, tries) = (q.get("at")?, q.get("tries")?);
                q.only(&["at", "tries"])?;
                Self::Menu {
                    at: StepPath::decode(at).ok_or(RouteError::BadQuery)?,
                    tries: small_number(tries)?,
                }
            }
            "dial-result" => {
                let (at, n) = (q.get("at")?, q.get("n")?);
                q.only(&["at", "n"])?;
                Self::DialResult {
                    at: StepPath::decode(at).ok_or(RouteError::BadQuery)?,
                    hunt: small_number(n)?,
                }
            }
            "screen" => {
                let (at, from) = (q.get("at")?, q.get("from")?);
                q.only(&["at", "from"])?;
                Self::Screen {
                    at: StepPath::decode(at).ok_or(RouteError::BadQuery)?,
                    caller: Caller::decode(from).ok_or(RouteError::BadQuery)?,
                }
            }
            "screen-result" => {
                q.only(&[])?;
                Self::ScreenResult
            }
            "alert" | "alert-keys" => {
                let (key, prompt) = (q.get("key")?, q.get("prompt")?);
                q.only(&["key", "prompt"])?;
                let (key, prompt) = (alert_key(key)?, small_number(prompt)?);
                if prompt == 0 {
                    return Err(RouteError::BadQuery);
                }
                match route {
                    "alert" => Self::Alert { key, prompt },
                    _ => Self::AlertKeys { key, prompt },
                }
            }
            "transcription" => {
                q.only(&[])?;
                Self::Transcription
            }
            _ => {
                let at = q.get("at")?;
                q.only(&["at"])?;
                Self::Voicemail {
                    at: StepPath::decode(at).ok_or(RouteError::BadQuery)?,
                }
            }
        };
        Ok((route, prefix))
    }

    /// The absolute URL of this route under `base` (scheme, host and path prefix).
    pub fn url(&self, base: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let segment = match self {
            Self::Answer => "voice",
            Self::Status => "status",
            Self::ScreenResult => "screen-result",
            Self::Transcription => "transcription",
            Self::Menu { at, tries } => {
                q.append_pair("at", &at.encode())
                    .append_pair("tries", &tries.to_string());
                "menu"
            }
            Self::DialResult { at, hunt } => {
                q.append_pair("at", &at.encode())
                    .append_pair("n", &hunt.to_string());
                "dial-result"
            }
            Self::Screen { at, caller } => {
                q.append_pair("at", &at.encode())
                    .append_pair("from", caller.encode());
                "screen"
            }
            Self::Voicemail { at } => {
                q.append_pair("at", &at.encode());
                "voicemail"
            }
            Self::Alert { key, prompt } | Self::AlertKeys { key, prompt } => {
                q.append_pair("key", key.as_str())
                    .append_pair("prompt", &prompt.to_string());
                match self {
                    Self::Alert { .. } => "alert",
                    _ => "alert-keys",
                }
            }
        };
        let query = q.finish();
        if query.is_empty() {
            format!("{base}/{segment}")
        } else {
            format!("{base}/{segment}?{query}")
        }
    }
}

/// A query's pairs, each name at most once.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Result<Self, RouteError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(seen, _)| seen == k) {
                return Err(RouteError::BadQuery);
            }
        }
        Ok(Self(pairs))
    }
    fn get(&self, name: &str) -> Result<&str, RouteError> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(RouteError::BadQuery)
    }
    fn only(&self, names: &[&str]) -> Result<(), RouteError> {
        match self.0.iter().all(|(k, _)| names.contains(&k.as_str())) {
            true => Ok(()),
            false => Err(RouteError::BadQuery),
        }
    }
}

/// An alert step's request key: `alert:` and an idempotency key's bytes.
fn alert_key(text: &str) -> Result<IdempotencyKey, RouteError> {
    if !text.starts_with(ALERT_KEY_PREFIX) || text.len() == ALERT_KEY_PREFIX.len() {
        return Err(RouteError::BadQuery);
    }
    IdempotencyKey::new(text).map_err(|_| RouteError::BadQuery)
}

/// A count we put in a link (retries, hunt index): one or two plain digits.
fn small_number(text: &str) -> Result<u8, RouteError> {
    match text.len() {
        1 | 2 if text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse().map_err(|_| RouteError::BadQuery)
        }
        _ => Err(RouteError::BadQuery),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://fn.example/prefix";

    fn key(c: &str) -> Key {
        Key::parse(c).unwrap()
    }

    #[test]
    fn every_route_parses_back_from_its_own_url() {
        let at = StepPath::root(2, Branch::Holiday)
            .child(key("1"))
            .and_then(|p| p.child(key("#")))
            .unwrap();
        let routes = [
            Route::Answer,
            Route::Status,
            Route::ScreenResult,
            Route::Transcription,
            Route::Menu {
                at: at.clone(),
                tries: 2,
            },
            Route::DialResult {
                at: at.clone(),
                hunt: 1,
            },
            Route::Screen {
                at: at.clone(),
                caller: Caller::Number(PhoneNumber::parse("+81312345678").unwrap()),
            },
            Route::Screen {
                at: StepPath::root(0, Branch::Main),
                caller: Caller::Withheld,
            },
            Route::Voicemail { at },
            Route::Alert {
                key: IdempotencyKey::new("alert:cpu-high-1732500000:2").unwrap(),
                prompt: 1,
            },
            Route::AlertKeys {
                key: IdempotencyKey::new("alert:a b&c=d:1").unwrap(),
                prompt: 12,
            },
        ];
        for route in routes {
            let url = route.url(BASE);
            let rest = url.strip_prefix("https://fn.example").unwrap();
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            assert_eq!(Route::parse(path, query), Ok((route, "/prefix")), "{url}");
        }
        assert!(
            Route::Menu {
                at: StepPath::root(0, Branch::Main).child(key("#")).unwrap(),
                tries: 0
            }
            .url("")
            .contains("at=0m%23")
        );
    }

    #[test]
    fn paths_and_queries_that_we_never_built_are_refused() {
        assert_eq!(Route::parse("/", ""), Ok((Route::Answer, "")));
        assert_eq!(Route::parse("", ""), Ok((Route::Answer, "")));
        assert_eq!(
            Route::parse("/voice", "CallSid=CA1&From=x"),
            Ok((Route::Answer, ""))
        );
        assert_eq!(Route::parse("/admin", ""), Err(RouteError::NotFound));
        assert_eq!(Route::parse("/voice/extra", ""), Err(RouteError::NotFound));
        for (path, query) in [
            ("/menu", ""),
            ("/menu", "at=0m&tries=1&x=1"),
            ("/menu", "at=0m&at=0m&tries=1"),
            ("/menu", "at=0m&tries=-1"),
            ("/menu", "at=0m&tries=999"),
            ("/menu", "at=0x&tries=0"),
            ("/menu", "at=m&tries=0"),
            ("/menu", "at=0m1234&tries=0"),
            ("/menu", "at=0m1A&tries=0"),
            ("/dial-result", "at=0m"),
            ("/screen", "at=0m&from=090"),
            ("/screen-result", "x=1"),
            ("/transcription", "x=1"),
            ("/voicemail", "at="),
            ("/alert", "key=alert:a:1"),
            ("/alert", "prompt=1"),
            ("/alert", "key=alert:a:1&prompt=0"),
            ("/alert", "key=alert:a:1&prompt=100"),
            ("/alert", "key=alert:a:1&prompt=1&at=0m"),
            ("/alert", "key=alert:a:1&key=alert:b:1&prompt=1"),
            ("/alert", "key=other:a:1&prompt=1"),
            ("/alert", "key=alert:&prompt=1"),
            ("/alert-keys", "key=alert:a%0A:1&prompt=1"),
            ("/alert-keys", "key=alert:a:1&prompt=x"),
        ] {
            assert_eq!(
                Route::parse(path, query),
                Err(RouteError::BadQuery),
                "{path}?{query}"
            );
        }
    }

    #[test]
    fn an_alert_url_built_by_hand_parses() {
        // outbound-call builds the first URL itself, with or without escaping the colons.
        for query in ["key=alert:cpu:1&prompt=1", "key=alert%3Acpu%3A1&prompt=1"] {
            assert_eq!(
                Route::parse("/prefix/alert", query),
                Ok((
                    Route::Alert {
                        key: IdempotencyKey::new("alert:cpu:1").unwrap(),
                        prompt: 1
                    },
                    "/prefix"
                )),
                "{query}"
            );
        }
    }

    #[test]
    fn withheld_callers_are_recognised_in_every_spelling() {
        for from in [
            None,
            Some(""),
            Some("anonymous"),
            Some("Anonymous"),
            Some("Restricted"),
            Some("+266696687"),
            Some("+86282452253"),
            Some("client:alice"),
        ] {
            assert_eq!(Caller::from_param(from), Caller::Withheld, "{from:?}");
        }
        assert!(matches!(
            Caller::from_param(Some("+81312345678")),
            Caller::Number(_)
        ));
    }
}
