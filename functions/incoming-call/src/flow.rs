//! The call flow: configuration (JSON), not code. It says what a caller hears and where the call
//! goes; the handler asks it for the TwiML of each step. See the README for the format.

use std::collections::BTreeMap;

use serde::Deserialize;
use twilio_voice::phone::PhoneNumber;
use twilio_voice::twiml::{
    Dial, Gather, GatherInput, Method, Play, Record, Redirect, Say, Speech, VoiceResponse,
};

/// Twilio's demo `voice.xml` plays this; the flow used when none is configured plays it too.
pub const DEMO_AUDIO: &str = "https://demo.twilio.com/docs/classic.mp3";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallFlow {
    /// Default language of every spoken text (e.g. `ja-JP`).
    #[serde(default)]
    pub language: Option<String>,
    /// Default voice of every spoken text (e.g. `Polly.Mizuki`).
    #[serde(default)]
    pub voice: Option<String>,
    #[serde(default)]
    pub greeting: Option<Speech>,
    /// Audio played after the greeting.
    #[serde(default)]
    pub play: Option<String>,
    /// What happens next; without it the call ends after the greeting and audio.
    #[serde(default)]
    pub then: Option<Step>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Menu(Menu),
    Forward(Forward),
    Voicemail(Voicemail),
    Message(Speech),
    Hangup {},
}

/// A menu choice.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Choice {
    Forward(Forward),
    Voicemail(Voicemail),
    Message(Speech),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Menu {
    pub prompt: Speech,
    /// Key pressed (`0`-`9`, `*`, `#`) → what happens.
    pub options: BTreeMap<String, Choice>,
    /// Seconds to wait for a key.
    #[serde(default = "default_menu_timeout")]
    pub timeout: u32,
    /// Said before the menu is offered again after a key with no option.
    #[serde(default)]
    pub invalid: Option<Speech>,
    /// Said before hanging up when no key was pressed.
    #[serde(default)]
    pub no_input: Option<Speech>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub number: PhoneNumber,
    /// Seconds to ring before the fallback.
    #[serde(default = "default_ring_timeout")]
    pub timeout: u32,
    #[serde(default)]
    pub caller_id: Option<PhoneNumber>,
    /// Voicemail when nobody answers (busy, no answer, failed).
    #[serde(default)]
    pub fallback: Option<Voicemail>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voicemail {
    #[serde(default)]
    pub prompt: Option<Speech>,
    /// Longest message, in seconds.
    #[serde(default = "default_max_length")]
    pub max_length: u32,
    /// Said after the message is recorded.
    #[serde(default)]
    pub goodbye: Option<Speech>,
    #[serde(default)]
    pub transcribe: bool,
}

fn default_menu_timeout() -> u32 {
    5
}
fn default_ring_timeout() -> u32 {
    20
}
fn default_max_length() -> u32 {
    120
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the call flow is not valid JSON for the documented format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the call flow is not valid: {0}")]
    Invalid(String),
}

/// Absolute URLs of this function's routes, built from the URL Twilio called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub base: String,
}

impl Links {
    pub fn answer(&self) -> String {
        format!("{}/voice", self.base)
    }
    pub fn menu(&self) -> String {
        format!("{}/menu", self.base)
    }
    pub fn dial_result(&self, choice: Option<&str>) -> String {
        match choice {
            Some(key) => format!("{}/dial-result?choice={}", self.base, percent(key)),
            None => format!("{}/dial-result", self.base),
        }
    }
    pub fn voicemail(&self, choice: Option<&str>) -> String {
        match choice {
            Some(key) => format!("{}/voicemail?choice={}", self.base, percent(key)),
            None => format!("{}/voicemail", self.base),
        }
    }
}

fn percent(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes()).collect()
}

impl Default for CallFlow {
    /// Like Twilio's demo `voice.xml`: a greeting, then music.
    fn default() -> Self {
        Self {
            language: Some("en-US".into()),
            voice: None,
            greeting: Some(Speech::Text(
                "Thanks for calling. This number is answered by AWS Lambda, in Rust. Enjoy!".into(),
            )),
            play: Some(DEMO_AUDIO.into()),
            then: None,
        }
    }
}

impl CallFlow {
    /// Parses and checks a flow document; every problem is reported at start-up, not mid-call.
    pub fn from_json(json: &str) -> Result<Self, FlowError> {
        let flow: Self = serde_json::from_str(json)?;
        flow.check()?;
        Ok(flow)
    }

    fn check(&self) -> Result<(), FlowError> {
        let bad = |m: String| Err(FlowError::Invalid(m));
        if let Some(url) = &self.play {
            check_url("play", url)?;
        }
        let speeches = self.speeches();
        if let Some(empty) = speeches.iter().find(|s| s.text().trim().is_empty()) {
            return bad(format!("a spoken text is empty ({empty:?})"));
        }
        match &self.then {
            Some(Step::Menu(menu)) => {
                if menu.options.is_empty() {
                    return bad("menu.options is empty".into());
                }
                for key in menu.options.keys() {
                    if !matches!(key.as_bytes(), [b'0'..=b'9' | b'*' | b'#']) {
                        return bad(format!("menu option {key:?} is not one key of 0-9, * or #"));
                    }
                }
                if !(1..=60).contains(&menu.timeout) {
                    return bad("menu.timeout must be 1 to 60 seconds".into());
                }
                for choice in menu.options.values() {
                    check_choice(choice)?;
                }
            }
            Some(Step::Forward(f)) => check_forward(f)?,
            Some(Step::Voicemail(v)) => check_voicemail(v)?,
            Some(Step::Message(_) | Step::Hangup {}) | None => {}
        }
        Ok(())
    }

    fn speeches(&self) -> Vec<&Speech> {
        let mut all: Vec<&Speech> = self.greeting.iter().collect();
        fn voicemail(v: &Voicemail) -> Vec<&Speech> {
            v.prompt.iter().chain(v.goodbye.iter()).collect()
        }
        fn choice(c: &Choice) -> Vec<&Speech> {
            match c {
                Choice::Forward(f) => f.fallback.as_ref().map(voicemail).unwrap_or_default(),
                Choice::Voicemail(v) => voicemail(v),
                Choice::Message(s) => vec![s],
            }
        }
        match &self.then {
            Some(Step::Menu(m)) => {
                all.push(&m.prompt);
                all.extend(m.invalid.iter().chain(m.no_input.iter()));
                for c in m.options.values() {
                    all.extend(choice(c));
                }
            }
            Some(Step::Forward(f)) => {
                all.extend(f.fallback.as_ref().map(voicemail).unwrap_or_default())
            }
            Some(Step::Voicemail(v)) => all.extend(voicemail(v)),
            Some(Step::Message(s)) => all.push(s),
            Some(Step::Hangup {}) | None => {}
        }
        all
    }

    /// The answer to a new call.
    pub fn answer(&self, links: &Links) -> VoiceResponse {
        let mut r = VoiceResponse::new();
        if let Some(greeting) = &self.greeting {
            r = r.say(self.say(greeting));
        }
        if let Some(url) = &self.play {
            r = r.play(Play::new(url));
        }
        match &self.then {
            Some(Step::Menu(menu)) => self.offer_menu(r, menu, links),
            Some(Step::Forward(f)) => self.forward(r, f, None, links),
            Some(Step::Voicemail(v)) => self.voicemail(r, v, None, links),
            Some(Step::Message(s)) => r.say(self.say(s)).hangup(),
            Some(Step::Hangup {}) | None => r.hangup(),
        }
    }

    /// The answer to a menu choice (`Digits` from `<Gather>`).
    pub fn choose(&self, digits: Option<&str>, links: &Links) -> VoiceResponse {
        let r = VoiceResponse::new();
        let Some(Step::Menu(menu)) = &self.then else {
            // No menu (any more): start over rather than fail the call.
            return r.redirect(Redirect::new(links.answer()));
        };
        let digits = digits.unwrap_or("").trim();
        match menu.options.get(digits) {
            Some(Choice::Forward(f)) => self.forward(r, f, Some(digits), links),
            Some(Choice::Voicemail(v)) => self.voicemail(r, v, Some(digits), links),
            Some(Choice::Message(s)) => r.say(self.say(s)).hangup(),
            None => {
                let invalid = menu.invalid.clone().unwrap_or_else(|| {
                    Speech::Text(self.localized(
                        "Sorry, that is not an option.",
                        "申し訳ありません。その番号は選択できません。",
                    ))
                });
                self.offer_menu(r.say(self.say(&invalid)), menu, links)
            }
        }
    }

    /// After a forwarded call: hang up if it was answered, else the fallback voicemail.
    pub fn dial_result(
        &self,
        choice: Option<&str>,
        dial_status: Option<&str>,
        links: &Links,
    ) -> VoiceResponse {
        let r = VoiceResponse::new();
        if matches!(dial_status, Some("completed" | "answered")) {
            return r.hangup();
        }
        match self.forward_for(choice).and_then(|f| f.fallback.as_ref()) {
            Some(v) => self.voicemail(r, v, choice, links),
            None => r.hangup(),
        }
    }

    /// After a voicemail was recorded.
    pub fn voicemail_done(&self, choice: Option<&str>) -> VoiceResponse {
        let goodbye = self
            .voicemail_for(choice)
            .and_then(|v| v.goodbye.clone())
            .unwrap_or_else(|| {
                Speech::Text(self.localized(
                    "Thank you. Goodbye.",
                    "ありがとうございました。失礼いたします。",
                ))
            });
        VoiceResponse::new().say(self.say(&goodbye)).hangup()
    }

    fn forward_for(&self, choice: Option<&str>) -> Option<&Forward> {
        match (&self.then, choice) {
            (Some(Step::Forward(f)), None) => Some(f),
            (Some(Step::Menu(m)), Some(key)) => match m.options.get(key) {
                Some(Choice::Forward(f)) => Some(f),
                _ => None,
            },
            _ => None,
        }
    }

    fn voicemail_for(&self, choice: Option<&str>) -> Option<&Voicemail> {
        match (&self.then, choice) {
            (Some(Step::Voicemail(v)), None) => Some(v),
            (Some(Step::Forward(f)), None) => f.fallback.as_ref(),
            (Some(Step::Menu(m)), Some(key)) => match m.options.get(key) {
                Some(Choice::Voicemail(v)) => Some(v),
                Some(Choice::Forward(f)) => f.fallback.as_ref(),
                _ => None,
            },
            _ => None,
        }
    }

    fn offer_menu(&self, r: VoiceResponse, menu: &Menu, links: &Links) -> VoiceResponse {
        let gather = Gather::new()
            .input(GatherInput::Dtmf)
            .num_digits(1)
            .timeout(menu.timeout)
            .action(links.menu())
            .method(Method::Post)
            .say(self.say(&menu.prompt));
        let no_input = menu.no_input.clone().unwrap_or_else(|| {
            Speech::Text(self.localized(
                "We did not receive a choice. Goodbye.",
                "選択が確認できませんでした。失礼いたします。",
            ))
        });
        r.gather(gather).say(self.say(&no_input)).hangup()
    }

    fn forward(
        &self,
        r: VoiceResponse,
        f: &Forward,
        choice: Option<&str>,
        links: &Links,
    ) -> VoiceResponse {
        let mut dial = Dial::number(f.number.as_str())
            .timeout(f.timeout)
            .action(links.dial_result(choice))
            .method(Method::Post);
        if let Some(caller_id) = &f.caller_id {
            dial = dial.caller_id(caller_id.as_str());
        }
        r.dial(dial)
    }

    fn voicemail(
        &self,
        r: VoiceResponse,
        v: &Voicemail,
        choice: Option<&str>,
        links: &Links,
    ) -> VoiceResponse {
        let prompt = v.prompt.clone().unwrap_or_else(|| {
            Speech::Text(self.localized(
                "Please leave a message after the beep. Press the pound key when you are done.",
                "発信音のあとにメッセージをお話しください。終わりましたらシャープを押してください。",
            ))
        });
        let record = Record::new()
            .action(links.voicemail(choice))
            .method(Method::Post)
            .max_length(v.max_length)
            .finish_on_key("#")
            .play_beep(true)
            .transcribe(v.transcribe);
        // Without an action, Twilio would request this same URL again and replay the flow.
        r.say(self.say(&prompt)).record(record).hangup()
    }

    fn say(&self, speech: &Speech) -> Say {
        speech.to_say(self.language.as_deref(), self.voice.as_deref())
    }

    /// Built-in phrases follow the flow's language: Japanese for `ja-*`, English otherwise.
    fn localized(&self, english: &str, japanese: &str) -> String {
        let japanese_flow = self
            .language
            .as_deref()
            .is_some_and(|l| l.starts_with("ja"));
        if japanese_flow { japanese } else { english }.to_owned()
    }
}

fn check_url(field: &str, url: &str) -> Result<(), FlowError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => Ok(()),
        _ => Err(FlowError::Invalid(format!(
            "{field} must be an http(s) URL"
        ))),
    }
}

fn check_forward(f: &Forward) -> Result<(), FlowError> {
    if !(5..=600).contains(&f.timeout) {
        return Err(FlowError::Invalid(
            "forward.timeout must be 5 to 600 seconds".into(),
        ));
    }
    f.fallback.as_ref().map_or(Ok(()), check_voicemail)
}

fn check_voicemail(v: &Voicemail) -> Result<(), FlowError> {
    if !(1..=14_400).contains(&v.max_length) {
        return Err(FlowError::Invalid(
            "voicemail.max_length must be 1 to 14400 seconds".into(),
        ));
    }
    Ok(())
}

fn check_choice(c: &Choice) -> Result<(), FlowError> {
    match c {
        Choice::Forward(f) => check_forward(f),
        Choice::Voicemail(v) => check_voicemail(v),
        Choice::Message(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links {
            base: "https://example.lambda-url.ap-northeast-1.on.aws".into(),
        }
    }

    const JAPANESE: &str = r#"{
        "language": "ja-JP",
        "voice": "Polly.Mizuki",
        "greeting": "お電話ありがとうございます。",
        "then": {"menu": {
            "prompt": "営業は1を、サポートは2を、営業時間のご案内は3を押してください。",
            "options": {
                "1": {"forward": {"number": "+81312345678", "timeout": 15,
                                  "fallback": {"max_length": 60}}},
                "2": {"voicemail": {"prompt": {"text": "Leave a message.", "language": "en-US", "voice": "Polly.Joanna"}}},
                "3": {"message": "営業時間は平日9時から18時です。"}
            }
        }}
    }"#;

    #[test]
    fn default_flow_greets_and_plays_like_the_demo() {
        let xml = CallFlow::default().answer(&links()).to_xml();
        assert!(
            xml.contains(r#"<Say language="en-US">Thanks for calling."#),
            "{xml}"
        );
        assert!(
            xml.contains(&format!("<Play>{DEMO_AUDIO}</Play><Hangup/>")),
            "{xml}"
        );
    }

    #[test]
    fn japanese_menu_answers_with_a_gather() {
        let flow = CallFlow::from_json(JAPANESE).unwrap();
        let xml = flow.answer(&links()).to_xml();
        assert!(
            xml.contains(
                r#"<Say language="ja-JP" voice="Polly.Mizuki">お電話ありがとうございます。</Say>"#
            ),
            "{xml}"
        );
        assert!(xml.contains(r#"<Gather input="dtmf" action="https://example.lambda-url.ap-northeast-1.on.aws/menu" method="POST" timeout="5" numDigits="1"><Say language="ja-JP" voice="Polly.Mizuki">営業は1を"#), "{xml}");
        assert!(
            xml.contains("選択が確認できませんでした。失礼いたします。</Say><Hangup/></Response>"),
            "{xml}"
        );
    }

    #[test]
    fn menu_choices_forward_record_or_speak() {
        let flow = CallFlow::from_json(JAPANESE).unwrap();
        let forward = flow.choose(Some("1"), &links()).to_xml();
        assert!(forward.contains(r#"<Dial timeout="15" action="https://example.lambda-url.ap-northeast-1.on.aws/dial-result?choice=1" method="POST">+81312345678</Dial>"#), "{forward}");
        let voicemail = flow.choose(Some("2"), &links()).to_xml();
        assert!(voicemail.contains(r##"<Say language="en-US" voice="Polly.Joanna">Leave a message.</Say><Record action="https://example.lambda-url.ap-northeast-1.on.aws/voicemail?choice=2" method="POST" maxLength="120" finishOnKey="#" playBeep="true"/><Hangup/>"##), "{voicemail}");
        let message = flow.choose(Some("3"), &links()).to_xml();
        assert!(
            message.contains("営業時間は平日9時から18時です。</Say><Hangup/>"),
            "{message}"
        );
        let invalid = flow.choose(Some("9"), &links()).to_xml();
        assert!(
            invalid.contains("その番号は選択できません。</Say><Gather"),
            "{invalid}"
        );
        let none = flow.choose(None, &links()).to_xml();
        assert!(none.contains("<Gather"), "{none}");
    }

    #[test]
    fn unanswered_forward_falls_back_to_voicemail() {
        let flow = CallFlow::from_json(JAPANESE).unwrap();
        for status in ["no-answer", "busy", "failed", "canceled"] {
            let xml = flow.dial_result(Some("1"), Some(status), &links()).to_xml();
            assert!(xml.contains(r#"<Record action="https://example.lambda-url.ap-northeast-1.on.aws/voicemail?choice=1" method="POST" maxLength="60""#), "{status}: {xml}");
        }
        let answered = flow
            .dial_result(Some("1"), Some("completed"), &links())
            .to_xml();
        assert!(
            answered.ends_with("<Response><Hangup/></Response>"),
            "{answered}"
        );
        let done = flow.voicemail_done(Some("1")).to_xml();
        assert!(
            done.contains("ありがとうございました。失礼いたします。</Say><Hangup/>"),
            "{done}"
        );
    }

    #[test]
    fn top_level_forward_and_voicemail() {
        let flow = CallFlow::from_json(
            r#"{"greeting": "Hello", "then": {"forward": {"number": "+14155550100", "caller_id": "+14155550199",
                "fallback": {"goodbye": "Bye"}}}}"#,
        )
        .unwrap();
        let xml = flow.answer(&links()).to_xml();
        assert!(xml.contains(r#"<Dial callerId="+14155550199" timeout="20" action="https://example.lambda-url.ap-northeast-1.on.aws/dial-result" method="POST">+14155550100</Dial>"#), "{xml}");
        let fallback = flow.dial_result(None, Some("no-answer"), &links()).to_xml();
        assert!(
            fallback.contains("Please leave a message after the beep."),
            "{fallback}"
        );
        assert!(
            flow.voicemail_done(None)
                .to_xml()
                .contains("<Say>Bye</Say><Hangup/>")
        );
    }

    #[test]
    fn malformed_flows_are_refused_with_the_reason() {
        for (json, reason) in [
            ("{", "not valid JSON"),
            (r#"{"greting": "typo"}"#, "unknown field"),
            (
                r#"{"then": {"forward": {"number": "03-1234-5678"}}}"#,
                "E.164",
            ),
            (
                r#"{"then": {"menu": {"prompt": "p", "options": {}}}}"#,
                "options is empty",
            ),
            (
                r#"{"then": {"menu": {"prompt": "p", "options": {"12": {"message": "x"}}}}}"#,
                "not one key",
            ),
            (r#"{"play": "ftp://example.com/a.mp3"}"#, "http(s) URL"),
            (r#"{"greeting": " "}"#, "empty"),
            (
                r#"{"then": {"forward": {"number": "+81312345678", "timeout": 0}}}"#,
                "timeout",
            ),
            (r#"{"then": {"teleport": {}}}"#, "unknown variant"),
        ] {
            let err = CallFlow::from_json(json).unwrap_err().to_string();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }
}
