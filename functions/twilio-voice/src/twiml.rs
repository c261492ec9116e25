//! A typed TwiML builder with the nouns of Twilio's helper libraries (`VoiceResponse`, `Say`,
//! `Gather`, `Dial`, ...). Every text and attribute is escaped and stripped of the characters
//! XML 1.0 forbids, so user text can never close a verb and open another (TwiML injection).
//!
//! ```
//! use twilio_voice::twiml::{Say, VoiceResponse};
//! let xml = VoiceResponse::new()
//!     .say(Say::new("お電話ありがとうございます。").language("ja-JP").voice("Polly.Mizuki"))
//!     .hangup()
//!     .to_xml();
//! assert!(xml.contains(r#"<Say language="ja-JP" voice="Polly.Mizuki">お電話ありがとうございます。</Say>"#));
//! ```
//!
//! The nouns kept here are the ones of Twilio's helper libraries that the call flow, the
//! outbound `say` and the fuzz targets use, plus a few attributes (`Play` digits, `Gather`
//! speech input and hints, `Dial` record, `Record` callbacks) kept deliberately: they are the
//! next things a flow asks for, each is rendered by `renders_every_verb_with_attributes`.

pub mod inspect;

use std::fmt;

use serde::Deserialize;

/// The HTTP method Twilio uses for an `action` or `url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// One `<Response>` document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoiceResponse {
    verbs: Vec<Verb>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    Say(Say),
    Play(Play),
    Pause(Pause),
    Gather(Gather),
    Dial(Dial),
    Record(Record),
    Hangup,
    Redirect(Redirect),
    Reject(Reject),
}

/// `<Say>`: text to speech in any language and voice (`ja-JP` / `Polly.Mizuki`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Say {
    parts: Vec<SayPart>,
    language: Option<String>,
    voice: Option<String>,
    loops: Option<u32>,
}

/// A piece of a `<Say>`: plain text, or digits read as a telephone number (SSML `<say-as>`).
#[derive(Debug, Clone, PartialEq)]
enum SayPart {
    Text(String),
    Telephone(String),
}

/// Text to speak as configuration reads it (a call flow, an outbound event): a plain string, or
/// an object with its own language, voice and repeat count.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Speech {
    Text(String),
    Detailed(DetailedSpeech),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedSpeech {
    pub text: String,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub voice: Option<String>,
    /// Times to say it (a listener may pick up late).
    #[serde(default, rename = "loop")]
    pub loops: Option<u32>,
}

impl Speech {
    pub fn text(&self) -> &str {
        match self {
            Speech::Text(t) => t,
            Speech::Detailed(d) => &d.text,
        }
    }

    /// The `<Say>`, its own language and voice first, else the given defaults.
    pub fn to_say(&self, default_language: Option<&str>, default_voice: Option<&str>) -> Say {
        let (language, voice, loops) = match self {
            Speech::Text(_) => (None, None, None),
            Speech::Detailed(d) => (d.language.as_deref(), d.voice.as_deref(), d.loops),
        };
        let mut say = Say::new(self.text());
        if let Some(language) = language.or(default_language) {
            say = say.language(language);
        }
        if let Some(voice) = voice.or(default_voice) {
            say = say.voice(voice);
        }
        if let Some(loops) = loops {
            say = say.loops(loops);
        }
        say
    }
}

/// `<Play>`: an audio file (or `digits` to send DTMF tones).
#[derive(Debug, Clone, PartialEq)]
pub struct Play {
    url: Option<String>,
    loops: Option<u32>,
    digits: Option<String>,
}

/// `<Pause>`: silence for `length` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    length: Option<u32>,
}

/// What a `<Gather>` listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatherInput {
    Dtmf,
    Speech,
    DtmfSpeech,
}

/// Prompts nested in a `<Gather>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Say(Say),
    Play(Play),
    Pause(Pause),
}

/// `<Gather>`: collects digits or speech and posts them to `action`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gather {
    input: Option<GatherInput>,
    action: Option<String>,
    method: Option<Method>,
    timeout: Option<u32>,
    num_digits: Option<u32>,
    finish_on_key: Option<String>,
    language: Option<String>,
    hints: Option<String>,
    prompts: Vec<Prompt>,
}

/// `<Dial>`: forwards the call to a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Dial {
    number: Number,
    answer_on_bridge: bool,
    caller_id: Option<String>,
    timeout: Option<u32>,
    action: Option<String>,
    method: Option<Method>,
    time_limit: Option<u32>,
    record: Option<String>,
}

/// `<Number>`: the number a `<Dial>` rings; with `url`, TwiML that Twilio runs on the called
/// party's end once they answer, before the two parties are connected (a whisper, screening).
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    number: String,
    url: Option<String>,
    method: Option<Method>,
}

impl Number {
    pub fn new(number: impl Into<String>) -> Self {
        Self {
            number: number.into(),
            url: None,
            method: None,
        }
    }
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }
}

/// `<Record>`: voicemail. Transcription stays off unless asked for (it is billed per minute).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    action: Option<String>,
    method: Option<Method>,
    max_length: Option<u32>,
    timeout: Option<u32>,
    finish_on_key: Option<String>,
    play_beep: Option<bool>,
    transcribe: bool,
    transcribe_callback: Option<String>,
    recording_status_callback: Option<String>,
}

/// `<Redirect>`: continue with the TwiML at another URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    url: String,
    method: Option<Method>,
}

/// `<Reject>`: refuse the call without answering it (no charge for the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reject {
    #[default]
    Rejected,
    Busy,
}

impl VoiceResponse {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn verbs(&self) -> &[Verb] {
        &self.verbs
    }

    pub fn push(mut self, verb: Verb) -> Self {
        self.verbs.push(verb);
        self
    }

    pub fn say(self, say: Say) -> Self {
        self.push(Verb::Say(say))
    }
    pub fn play(self, play: Play) -> Self {
        self.push(Verb::Play(play))
    }
    pub fn pause(self, pause: Pause) -> Self {
        self.push(Verb::Pause(pause))
    }
    pub fn gather(self, gather: Gather) -> Self {
        self.push(Verb::Gather(gather))
    }
    pub fn dial(self, dial: Dial) -> Self {
        self.push(Verb::Dial(dial))
    }
    pub fn record(self, record: Record) -> Self {
        self.push(Verb::Record(record))
    }
    pub fn hangup(self) -> Self {
        self.push(Verb::Hangup)
    }
    pub fn redirect(self, redirect: Redirect) -> Self {
        self.push(Verb::Redirect(redirect))
    }
    pub fn reject(self, reject: Reject) -> Self {
        self.push(Verb::Reject(reject))
    }

    /// The whole document, with the XML declaration.
    pub fn to_xml(&self) -> String {
        // Written straight into one buffer: no formatter machinery on the webhook's path.
        let mut out = String::with_capacity(1024);
        out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        if self.verbs.is_empty() {
            out.push_str("<Response/>");
            return out;
        }
        out.push_str("<Response>");
        for verb in &self.verbs {
            verb.write(&mut out);
        }
        out.push_str("</Response>");
        out
    }
}

impl fmt::Display for VoiceResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml())
    }
}

impl Say {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            parts: vec![SayPart::Text(text.into())],
            language: None,
            voice: None,
            loops: None,
        }
    }
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }
    pub fn voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }
    /// Appends more text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.parts.push(SayPart::Text(text.into()));
        self
    }
    /// Appends digits read one by one as a telephone number
    /// (`<say-as interpret-as="telephone">`).
    pub fn telephone(mut self, digits: impl Into<String>) -> Self {
        self.parts.push(SayPart::Telephone(digits.into()));
        self
    }
    /// How many times to repeat; 0 repeats until the call ends.
    pub fn loops(mut self, loops: u32) -> Self {
        self.loops = Some(loops);
        self
    }
}

impl Play {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            loops: None,
            digits: None,
        }
    }
    /// Plays DTMF tones (`0-9`, `*`, `#`, `w` for a half-second wait) instead of a file.
    pub fn digits(digits: impl Into<String>) -> Self {
        Self {
            url: None,
            loops: None,
            digits: Some(digits.into()),
        }
    }
    pub fn loops(mut self, loops: u32) -> Self {
        self.loops = Some(loops);
        self
    }
}

impl Pause {
    pub fn new() -> Self {
        Self { length: None }
    }
    pub fn seconds(length: u32) -> Self {
        Self {
            length: Some(length),
        }
    }
}

impl Default for Pause {
    fn default() -> Self {
        Self::new()
    }
}

impl Gather {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn input(mut self, input: GatherInput) -> Self {
        self.input = Some(input);
        self
    }
    pub fn action(mut self, url: impl Into<String>) -> Self {
        self.action = Some(url.into());
        self
    }
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }
    pub fn num_digits(mut self, digits: u32) -> Self {
        self.num_digits = Some(digits);
        self
    }
    pub fn finish_on_key(mut self, key: impl Into<String>) -> Self {
        self.finish_on_key = Some(key.into());
        self
    }
    /// Speech recognition language (e.g. `ja-JP`).
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }
    pub fn hints(mut self, hints: impl Into<String>) -> Self {
        self.hints = Some(hints.into());
        self
    }
    pub fn say(mut self, say: Say) -> Self {
        self.prompts.push(Prompt::Say(say));
        self
    }
    pub fn play(mut self, play: Play) -> Self {
        self.prompts.push(Prompt::Play(play));
        self
    }
    pub fn pause(mut self, pause: Pause) -> Self {
        self.prompts.push(Prompt::Pause(pause));
        self
    }
}

impl Dial {
    /// Rings one number (bare, or a [`Number`] with its own attributes).
    pub fn number(number: impl Into<Number>) -> Self {
        Self {
            number: number.into(),
            answer_on_bridge: false,
            caller_id: None,
            timeout: None,
            action: None,
            method: None,
            time_limit: None,
            record: None,
        }
    }
    /// The caller keeps hearing ringing until the called party is connected (needed for a
    /// whisper: otherwise the caller hears silence while the callee is screened).
    pub fn answer_on_bridge(mut self, on: bool) -> Self {
        self.answer_on_bridge = on;
        self
    }
    pub fn caller_id(mut self, caller_id: impl Into<String>) -> Self {
        self.caller_id = Some(caller_id.into());
        self
    }
    /// Seconds to ring before giving up (Twilio's default is 30).
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }
    /// Where Twilio posts `DialCallStatus` when the dialled leg ends.
    pub fn action(mut self, url: impl Into<String>) -> Self {
        self.action = Some(url.into());
        self
    }
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }
    pub fn time_limit(mut self, seconds: u32) -> Self {
        self.time_limit = Some(seconds);
        self
    }
    pub fn record(mut self, mode: impl Into<String>) -> Self {
        self.record = Some(mode.into());
        self
    }
}

impl Record {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn action(mut self, url: impl Into<String>) -> Self {
        self.action = Some(url.into());
        self
    }
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }
    pub fn max_length(mut self, seconds: u32) -> Self {
        self.max_length = Some(seconds);
        self
    }
    /// Seconds of silence that end the recording.
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }
    pub fn finish_on_key(mut self, key: impl Into<String>) -> Self {
        self.finish_on_key = Some(key.into());
        self
    }
    pub fn play_beep(mut self, beep: bool) -> Self {
        self.play_beep = Some(beep);
        self
    }
    pub fn transcribe(mut self, transcribe: bool) -> Self {
        self.transcribe = transcribe;
        self
    }
    pub fn transcribe_callback(mut self, url: impl Into<String>) -> Self {
        self.transcribe_callback = Some(url.into());
        self
    }
    pub fn recording_status_callback(mut self, url: impl Into<String>) -> Self {
        self.recording_status_callback = Some(url.into());
        self
    }
}

impl Redirect {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: None,
        }
    }
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }
}

impl From<&str> for Number {
    fn from(number: &str) -> Self {
        Number::new(number)
    }
}

impl From<String> for Number {
    fn from(number: String) -> Self {
        Number::new(number)
    }
}

impl GatherInput {
    fn as_str(self) -> &'static str {
        match self {
            Self::Dtmf => "dtmf",
            Self::Speech => "speech",
            Self::DtmfSpeech => "dtmf speech",
        }
    }
}

impl Verb {
    fn write(&self, out: &mut String) {
        match self {
            Verb::Say(say) => say.write(out),
            Verb::Play(play) => play.write(out),
            Verb::Pause(pause) => pause.write(out),
            Verb::Gather(gather) => gather.write(out),
            Verb::Dial(dial) => dial.write(out),
            Verb::Record(record) => record.write(out),
            Verb::Hangup => out.push_str("<Hangup/>"),
            Verb::Redirect(r) => element(
                out,
                "Redirect",
                &[("method", r.method.map(|m| Text::Str(m.as_str())))],
                Some(&r.url),
            ),
            Verb::Reject(reason) => {
                let reason = match reason {
                    Reject::Rejected => "rejected",
                    Reject::Busy => "busy",
                };
                element(out, "Reject", &[("reason", Some(Text::Str(reason)))], None)
            }
        }
    }
}

impl Say {
    fn write(&self, out: &mut String) {
        let attrs = [
            ("language", self.language.as_deref().map(Text::Str)),
            ("voice", self.voice.as_deref().map(Text::Str)),
            ("loop", self.loops.map(Text::Num)),
        ];
        if let [SayPart::Text(text)] = self.parts.as_slice() {
            return element(out, "Say", &attrs, Some(text));
        }
        open_tag(out, "Say", &attrs);
        out.push('>');
        for part in &self.parts {
            match part {
                SayPart::Text(text) => push_xml_safe(out, text),
                SayPart::Telephone(digits) => element(
                    out,
                    "say-as",
                    &[("interpret-as", Some(Text::Str("telephone")))],
                    Some(digits),
                ),
            }
        }
        out.push_str("</Say>");
    }
}

impl Play {
    fn write(&self, out: &mut String) {
        element(
            out,
            "Play",
            &[
                ("loop", self.loops.map(Text::Num)),
                ("digits", self.digits.as_deref().map(Text::Str)),
            ],
            self.url.as_deref(),
        )
    }
}

impl Pause {
    fn write(&self, out: &mut String) {
        element(
            out,
            "Pause",
            &[("length", self.length.map(Text::Num))],
            None,
        )
    }
}

impl Gather {
    fn write(&self, out: &mut String) {
        let attrs = [
            ("input", self.input.map(|i| Text::Str(i.as_str()))),
            ("action", self.action.as_deref().map(Text::Str)),
            ("method", self.method.map(|m| Text::Str(m.as_str()))),
            ("timeout", self.timeout.map(Text::Num)),
            ("numDigits", self.num_digits.map(Text::Num)),
            ("finishOnKey", self.finish_on_key.as_deref().map(Text::Str)),
            ("language", self.language.as_deref().map(Text::Str)),
            ("hints", self.hints.as_deref().map(Text::Str)),
        ];
        if self.prompts.is_empty() {
            return element(out, "Gather", &attrs, None);
        }
        open_tag(out, "Gather", &attrs);
        out.push('>');
        for prompt in &self.prompts {
            match prompt {
                Prompt::Say(say) => say.write(out),
                Prompt::Play(play) => play.write(out),
                Prompt::Pause(pause) => pause.write(out),
            }
        }
        out.push_str("</Gather>")
    }
}

impl Dial {
    fn write(&self, out: &mut String) {
        let attrs = [
            (
                "answerOnBridge",
                self.answer_on_bridge.then_some(Text::Str("true")),
            ),
            ("callerId", self.caller_id.as_deref().map(Text::Str)),
            ("timeout", self.timeout.map(Text::Num)),
            ("action", self.action.as_deref().map(Text::Str)),
            ("method", self.method.map(|m| Text::Str(m.as_str()))),
            ("timeLimit", self.time_limit.map(Text::Num)),
            ("record", self.record.as_deref().map(Text::Str)),
        ];
        let n = &self.number;
        if n.url.is_none() && n.method.is_none() {
            return element(out, "Dial", &attrs, Some(&n.number));
        }
        open_tag(out, "Dial", &attrs);
        out.push('>');
        element(
            out,
            "Number",
            &[
                ("url", n.url.as_deref().map(Text::Str)),
                ("method", n.method.map(|m| Text::Str(m.as_str()))),
            ],
            Some(&n.number),
        );
        out.push_str("</Dial>");
    }
}

impl Record {
    fn write(&self, out: &mut String) {
        element(
            out,
            "Record",
            &[
                ("action", self.action.as_deref().map(Text::Str)),
                ("method", self.method.map(|m| Text::Str(m.as_str()))),
                ("maxLength", self.max_length.map(Text::Num)),
                ("timeout", self.timeout.map(Text::Num)),
                ("finishOnKey", self.finish_on_key.as_deref().map(Text::Str)),
                (
                    "playBeep",
                    self.play_beep
                        .map(|b| Text::Str(if b { "true" } else { "false" })),
                ),
                ("transcribe", self.transcribe.then_some(Text::Str("true"))),
                (
                    "transcribeCallback",
                    self.transcribe_callback.as_deref().map(Text::Str),
                ),
                (
                    "recordingStatusCallback",
                    self.recording_status_callback.as_deref().map(Text::Str),
                ),
            ],
            None,
        )
    }
}

/// An attribute value: text to escape, or a number.
enum Text<'a> {
    Str(&'a str),
    Num(u32),
}

type Attr<'a> = (&'static str, Option<Text<'a>>);

fn open_tag(out: &mut String, name: &str, attrs: &[Attr<'_>]) {
    out.push('<');
    out.push_str(name);
    for (key, value) in attrs {
        let Some(value) = value else { continue };
        out.push(' ');
        out.push_str(key);
        out.push_str("=\"");
        match value {
            Text::Str(s) => push_xml_safe(out, s),
            Text::Num(n) => {
                use fmt::Write as _;
                let _ = write!(out, "{n}");
            }
        }
        out.push('"');
    }
}

fn element(out: &mut String, name: &str, attrs: &[Attr<'_>], text: Option<&str>) {
    open_tag(out, name, attrs);
    match text {
        Some(text) => {
            out.push('>');
            push_xml_safe(out, text);
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        None => out.push_str("/>"),
    }
}

/// Escapes the five XML specials and drops the characters XML 1.0 does not allow at all
/// (C0 controls except tab/newline/carriage return, U+FFFE, U+FFFF): one such character would
/// make the whole document unparsable and Twilio would play its error message.
fn push_xml_safe(out: &mut String, raw: &str) {
    // One branch-free pass (it vectorizes) decides whether any work is needed: most text has
    // nothing to escape and nothing to drop, and is copied as it is.
    let (mut unusual, mut special) = (false, false);
    for &b in raw.as_bytes() {
        unusual |= b < 0x20 || b == 0xEF;
        special |= matches!(b, b'<' | b'>' | b'&' | b'\'' | b'"');
    }
    if !unusual && !special {
        out.push_str(raw);
    } else if !unusual || xml_allowed(raw) {
        out.push_str(&quick_xml::escape::escape(raw));
    } else {
        let allowed = |c: char| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
        };
        let cleaned: String = raw.chars().filter(|&c| allowed(c)).collect();
        out.push_str(&quick_xml::escape::escape(&cleaned));
    }
}

/// True when `raw` has none of the characters XML 1.0 forbids; one pass over the bytes (in
/// UTF-8, U+FFFE and U+FFFF are EF BF BE and EF BF BF).
fn xml_allowed(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => true,
        0..0x20 => false,
        0xEF => !(bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF))),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    #[test]
    fn empty_response_is_one_document() {
        assert_eq!(VoiceResponse::new().to_xml(), format!("{DECL}<Response/>"));
    }

    #[test]
    fn renders_twilio_demo_voice_xml() {
        let xml = VoiceResponse::new()
            .say(Say::new("Thanks for trying our documentation. Enjoy!").voice("alice"))
            .play(Play::new("https://demo.twilio.com/docs/classic.mp3"))
            .to_xml();
        assert_eq!(
            xml,
            format!(
                "{DECL}<Response><Say voice=\"alice\">Thanks for trying our documentation. Enjoy!</Say>\
                 <Play>https://demo.twilio.com/docs/classic.mp3</Play></Response>"
            )
        );
    }

    #[test]
    fn renders_every_verb_with_attributes() {
        let xml = VoiceResponse::new()
            .say(
                Say::new("こんにちは")
                    .language("ja-JP")
                    .voice("Polly.Mizuki")
                    .loops(2),
            )
            .play(Play::new("https://example.com/a.mp3").loops(0))
            .play(Play::digits("1w2"))
            .pause(Pause::seconds(2))
            .gather(
                Gather::new()
                    .input(GatherInput::DtmfSpeech)
                    .action("https://example.com/menu")
                    .method(Method::Post)
                    .timeout(5)
                    .num_digits(1)
                    .finish_on_key("#")
                    .language("ja-JP")
                    .hints("はい,いいえ")
                    .say(Say::new("1を押してください"))
                    .pause(Pause::new())
                    .play(Play::new("https://example.com/b.mp3")),
            )
            .dial(
                Dial::number("+81312345678")
                    .caller_id("+81300000000")
                    .timeout(20)
                    .action("https://example.com/dial")
                    .method(Method::Post)
                    .time_limit(600)
                    .record("record-from-answer"),
            )
            .record(
                Record::new()
                    .action("https://example.com/vm")
                    .max_length(120)
                    .timeout(5)
                    .finish_on_key("#")
                    .play_beep(true)
                    .recording_status_callback("https://example.com/rec"),
            )
            .redirect(Redirect::new("https://example.com/voice").method(Method::Post))
            .reject(Reject::Busy)
            .hangup()
            .to_xml();
        let expected = concat!(
            r#"<Response>"#,
            r#"<Say language="ja-JP" voice="Polly.Mizuki" loop="2">こんにちは</Say>"#,
            r#"<Play loop="0">https://example.com/a.mp3</Play>"#,
            r#"<Play digits="1w2"/>"#,
            r#"<Pause length="2"/>"#,
            r##"<Gather input="dtmf speech" action="https://example.com/menu" method="POST" timeout="5" numDigits="1" finishOnKey="#" language="ja-JP" hints="はい,いいえ">"##,
            r#"<Say>1を押してください</Say><Pause/><Play>https://example.com/b.mp3</Play></Gather>"#,
            r#"<Dial callerId="+81300000000" timeout="20" action="https://example.com/dial" method="POST" timeLimit="600" record="record-from-answer">+81312345678</Dial>"#,
            r##"<Record action="https://example.com/vm" maxLength="120" timeout="5" finishOnKey="#" playBeep="true" recordingStatusCallback="https://example.com/rec"/>"##,
            r#"<Redirect method="POST">https://example.com/voice</Redirect>"#,
            r#"<Reject reason="busy"/>"#,
            r#"<Hangup/>"#,
            r#"</Response>"#,
        );
        assert_eq!(xml, format!("{DECL}{expected}"));
    }

    #[test]
    fn screened_dial_and_telephone_digits() {
        let xml = VoiceResponse::new()
            .say(
                Say::new("お電話です。")
                    .telephone("0312345678")
                    .text("1を押すと応答します。")
                    .language("ja-JP"),
            )
            .dial(
                Dial::number(
                    Number::new("+81312345678")
                        .url("https://example.com/screen?at=0")
                        .method(Method::Post),
                )
                .answer_on_bridge(true)
                .time_limit(3600),
            )
            .to_xml();
        assert!(xml.contains(r#"<Say language="ja-JP">お電話です。<say-as interpret-as="telephone">0312345678</say-as>1を押すと応答します。</Say>"#), "{xml}");
        assert!(xml.contains(r#"<Dial answerOnBridge="true" timeLimit="3600"><Number url="https://example.com/screen?at=0" method="POST">+81312345678</Number></Dial>"#), "{xml}");
        let evil = VoiceResponse::new()
            .say(Say::new("a").telephone("</say-as><Dial>+1900</Dial>"))
            .to_xml();
        assert!(!evil.contains("<Dial>"), "{evil}");
    }

    #[test]
    fn speech_reads_a_string_or_an_object_with_defaults() {
        let plain: Speech = serde_json::from_str(r#""もしもし""#).unwrap();
        let xml = VoiceResponse::new()
            .say(plain.to_say(Some("ja-JP"), Some("Polly.Mizuki")))
            .to_xml();
        assert!(
            xml.contains(r#"<Say language="ja-JP" voice="Polly.Mizuki">もしもし</Say>"#),
            "{xml}"
        );
        let own: Speech =
            serde_json::from_str(r#"{"text": "Hi", "language": "en-US", "loop": 2}"#).unwrap();
        let xml = VoiceResponse::new()
            .say(own.to_say(Some("ja-JP"), Some("Polly.Mizuki")))
            .to_xml();
        assert!(
            xml.contains(r#"<Say language="en-US" voice="Polly.Mizuki" loop="2">Hi</Say>"#),
            "{xml}"
        );
        assert!(serde_json::from_str::<Speech>(r#"{"text": "x", "speed": 2}"#).is_err());
    }

    #[test]
    fn record_transcription_is_off_unless_asked() {
        let off = VoiceResponse::new().record(Record::new()).to_xml();
        assert!(off.ends_with("<Response><Record/></Response>"), "{off}");
        let on = VoiceResponse::new()
            .record(
                Record::new()
                    .transcribe(true)
                    .transcribe_callback("https://e.com/t"),
            )
            .to_xml();
        assert!(on.contains(r#"<Record transcribe="true" transcribeCallback="https://e.com/t"/>"#));
    }

    #[test]
    fn text_cannot_inject_verbs() {
        let evil = r#"</Say><Dial>+19005550000</Dial><Say a="'&"#;
        let xml = VoiceResponse::new()
            .say(Say::new(evil).voice(r#""><Dial>+1900</Dial>"#))
            .to_xml();
        assert!(!xml.contains("<Dial>"), "{xml}");
        assert!(xml.contains(
            "&lt;/Say&gt;&lt;Dial&gt;+19005550000&lt;/Dial&gt;&lt;Say a=&quot;&apos;&amp;"
        ));
        assert!(xml.contains(r#"voice="&quot;&gt;&lt;Dial&gt;+1900&lt;/Dial&gt;""#));
    }

    #[test]
    fn forbidden_xml_characters_are_removed() {
        let xml = VoiceResponse::new()
            .say(Say::new(
                "a\u{0}b\u{8}c\u{b}\u{c}d\u{1f}e\tf\ng\u{fffe}h\u{ffff}i",
            ))
            .to_xml();
        assert!(xml.contains("<Say>abcde\tf\nghi</Say>"), "{xml:?}");
        let cr = VoiceResponse::new().say(Say::new("a\rb")).to_xml();
        assert!(cr.contains("<Say>a&#13;b</Say>"), "{cr:?}");
    }

    #[test]
    fn byte_scan_agrees_with_the_character_rule() {
        let rule = |s: &str| {
            s.chars().all(|c| {
                matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
            })
        };
        for s in [
            "",
            "plain",
            "日本語テキスト",
            "\u{FFFD}",
            "\u{FFFE}",
            "x\u{FFFF}",
            "\u{FEFF}",
            "\u{EFBF}",
            "\u{F000}\u{BE}",
            "tab\tnl\ncr\r",
            "\u{1}",
            "\u{1F}",
            "\u{7F}",
            "末尾\u{FFFF}",
            "\u{10FFFF}",
        ] {
            assert_eq!(xml_allowed(s), rule(s), "{s:?}");
        }
    }
}
