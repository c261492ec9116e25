//! The call flow: configuration (JSON), not code. It says what a caller hears and where the call
//! goes; the handler asks it for the TwiML of each step. See the README for the format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use twilio_voice::limits;
use twilio_voice::phone::{PhoneNumber, mask_digits};
use twilio_voice::twiml::{
    Dial, Gather, GatherInput, Method, Number, Play, Record, Redirect, Reject, Say, Speech,
    VoiceResponse,
};

use crate::route::{Branch, Caller, Key, MAX_KEYS, Route, StepPath};
use crate::schedule::{DateRange, Hours};
use crate::voices;

/// Twilio's demo `voice.xml` plays this; the flow used when none is configured plays it too.
pub const DEMO_AUDIO: &str = "https://demo.twilio.com/docs/classic.mp3";

// Limits (seconds unless said otherwise). Twilio's own, and the cost caps shared with outbound
// calls, come from `twilio_voice::limits`; these are the flow's defaults and its own bounds.
/// Default and range of the seconds a menu waits for a key.
pub const MENU_TIMEOUT: u32 = 5;
pub const MENU_TIMEOUT_MAX: u32 = 60;
/// Default and most re-prompts after an invalid key or no key, before the goodbye.
pub const MENU_RETRIES: u8 = 2;
pub const MENU_RETRIES_MAX: u8 = 5;
/// Default and range of the ring time of a forward.
pub const RING_TIMEOUT: u32 = 20;
pub const RING_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> =
    5..=*limits::RING_TIMEOUT_SECONDS.end();
/// Default seconds a forwarded call may last (`<Dial timeLimit>`), a cost cap; at most
/// Twilio's [`limits::TIME_LIMIT_SECONDS`].
pub const FORWARD_TIME_LIMIT: u32 = limits::DEFAULT_TIME_LIMIT_SECONDS;
/// Most numbers a forward rings in turn.
pub const HUNT_MAX: usize = 5;
/// Seconds the screened callee has to press 1.
pub const SCREEN_TIMEOUT: u32 = 8;
/// Default seconds of a voicemail; at most [`limits::RECORD_MAX_LENGTH_SECONDS`].
pub const VOICEMAIL_MAX_LENGTH: u32 = 120;

/// Each parsed flow gets its own id, so answers cached for an older flow are never served.
static NEXT_FLOW_ID: AtomicU64 = AtomicU64::new(1);

/// The whole document: a default flow, optionally one per called number (`To`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    voice: Option<String>,
    #[serde(default)]
    greeting: Option<Speech>,
    #[serde(default)]
    play: Option<String>,
    #[serde(default)]
    recording_notice: Option<Speech>,
    #[serde(default)]
    reject: Vec<String>,
    #[serde(default)]
    anonymous: Option<Step>,
    #[serde(default)]
    then: Option<Step>,
    #[serde(default)]
    schedule: Option<Schedule>,
    /// Flows for other Twilio numbers sharing this function, by `To`.
    #[serde(default)]
    numbers: BTreeMap<String, Flow>,
    /// Voices to accept beyond Twilio's published list (a voice newer than this code).
    #[serde(default)]
    extra_voices: Vec<String>,
}

/// What one number answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
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
    /// Said before any recording starts.
    #[serde(default)]
    pub recording_notice: Option<Speech>,
    /// Callers refused with `<Reject>` (not answered, not billed): E.164 numbers or prefixes.
    #[serde(default)]
    pub reject: Vec<String>,
    /// Where callers who withhold their number go (default: like everyone else).
    #[serde(default)]
    pub anonymous: Option<Step>,
    /// What happens next; without it (and without `schedule`) the call ends.
    #[serde(default)]
    pub then: Option<Step>,
    /// Business hours routing, instead of `then`.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

/// Business hours routing: each of open / after hours / holiday goes to its own step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Open hours per weekday, Japan time: `"mon": "09:00-12:00,13:00-18:00"`.
    pub hours: Hours,
    /// Days closed whatever the hours say: `"2026-08-13"`, `"2026-12-29..2027-01-03"`.
    #[serde(default)]
    pub closed: Vec<DateRange>,
    /// Closed on Japan's national holidays (the embedded table); default true.
    #[serde(default = "yes")]
    pub japanese_holidays: bool,
    pub open: Step,
    pub after_hours: Step,
    /// On a national holiday or a `closed` date; default `after_hours`.
    #[serde(default)]
    pub holiday: Option<Step>,
}

fn yes() -> bool {
    true
}

impl Schedule {
    fn branch_at(&self, unix: i64) -> Branch {
        crate::schedule::branch_at(&self.hours, &self.closed, self.japanese_holidays, unix)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Menu(Menu),
    Forward(Forward),
    Voicemail(Voicemail),
    Message(Speech),
    Hangup {},
    /// `<Reject>`: only where a call starts (`then`, a schedule branch, `anonymous`).
    Reject {},
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Menu {
    pub prompt: Speech,
    /// Key pressed (`0`-`9`, `#`; `*` repeats the menu) → what happens.
    pub options: BTreeMap<String, Step>,
    #[serde(default = "default_menu_timeout")]
    pub timeout: u32,
    /// Said before the menu is offered again after a key with no option.
    #[serde(default)]
    pub invalid: Option<Speech>,
    /// Said when no key was pressed, before the menu is offered again.
    #[serde(default)]
    pub no_input: Option<Speech>,
    /// Re-prompts after an invalid key or none, then a goodbye.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// A key that goes back to the menu above.
    #[serde(default)]
    pub back: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// One number, or `numbers` rung in turn (a hunt).
    #[serde(default)]
    pub number: Option<PhoneNumber>,
    #[serde(default)]
    pub numbers: Vec<PhoneNumber>,
    /// Seconds to ring each number.
    #[serde(default = "default_ring_timeout")]
    pub timeout: u32,
    #[serde(default)]
    pub caller_id: Option<PhoneNumber>,
    /// The callee hears who is calling and presses 1 to take the call (default on): a carrier
    /// voicemail that picks up cannot press 1, so the caller reaches `fallback` instead.
    #[serde(default = "yes")]
    pub screen: bool,
    /// Longest forwarded call, in seconds.
    #[serde(default = "default_time_limit")]
    pub time_limit: u32,
    /// Voicemail when nobody takes the call.
    #[serde(default)]
    pub fallback: Option<Voicemail>,
}

impl Forward {
    fn targets(&self) -> &[PhoneNumber] {
        match &self.number {
            Some(n) => std::slice::from_ref(n),
            None => &self.numbers,
        }
    }
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
    MENU_TIMEOUT
}
fn default_retries() -> u8 {
    MENU_RETRIES
}
fn default_ring_timeout() -> u32 {
    RING_TIMEOUT
}
fn default_time_limit() -> u32 {
    FORWARD_TIME_LIMIT
}
fn default_max_length() -> u32 {
    VOICEMAIL_MAX_LENGTH
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Not JSON, or not the documented format; the message names the path.
    #[error("the call flow is not valid JSON for the documented format: {0}")]
    Json(String),
    #[error("the call flow is not valid: {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The flows of one document, checked. Index 0 is the default flow, then `numbers` in order.
#[derive(Debug, Clone)]
pub struct CallFlow {
    id: u64,
    flows: Vec<Flow>,
    numbers: Vec<(String, u8)>,
}

/// Absolute URLs of this function's routes, built from the URL Twilio called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub base: String,
}

impl Links {
    pub fn to(&self, route: &Route) -> String {
        route.url(&self.base)
    }
}

/// How a new call is routed: decided once, when it comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub flow: u8,
    pub branch: Branch,
}

/// The caller, as a flow needs it.
pub struct Call<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    /// Unix seconds, read once per call.
    pub now: i64,
}

impl Default for CallFlow {
    /// Like Twilio's demo `voice.xml`: a greeting, then music.
    fn default() -> Self {
        Self::new(vec![Flow {
            language: Some("en-US".into()),
            voice: None,
            greeting: Some(Speech::Text(
                "Thanks for calling. This number is answered by AWS Lambda, in Rust. Enjoy!".into(),
            )),
            play: Some(DEMO_AUDIO.into()),
            recording_notice: None,
            reject: Vec::new(),
            anonymous: None,
            then: None,
            schedule: None,
        }])
    }
}

impl CallFlow {
    fn new(flows: Vec<Flow>) -> Self {
        Self {
            id: NEXT_FLOW_ID.fetch_add(1, Ordering::Relaxed),
            flows,
            numbers: Vec::new(),
        }
    }

    /// Identifies this parsed document (answers rendered from it are cached under it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Parses and checks a flow document; every problem is reported at start-up, not mid-call,
    /// with the path of the field at fault (`then.menu.options.1.forward.numbers[0]`).
    pub fn from_json(json: &str) -> Result<Self, FlowError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // A path or a value may be a phone number (a per-number flow's key): masked, as the
            // error is logged.
            FlowError::Json(mask_digits(&if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }))
        })?;
        let main = Flow {
            language: doc.language,
            voice: doc.voice,
            greeting: doc.greeting,
            play: doc.play,
            recording_notice: doc.recording_notice,
            reject: doc.reject,
            anonymous: doc.anonymous,
            then: doc.then,
            schedule: doc.schedule,
        };
        let mut checker = Checker {
            extra_voices: &doc.extra_voices,
        };
        checker.flow("", &main)?;
        let mut flows = Vec::new();
        let mut numbers = Vec::new();
        for (i, (number, mut flow)) in doc.numbers.into_iter().enumerate() {
            let path = format!("numbers.{number}");
            PhoneNumber::parse(&number).map_err(|e| invalid(&path, e))?;
            if i + 1 >= usize::from(u8::MAX) {
                return Err(invalid("numbers", "too many numbers"));
            }
            flow.language = flow.language.or_else(|| main.language.clone());
            flow.voice = flow.voice.or_else(|| main.voice.clone());
            flow.recording_notice = flow
                .recording_notice
                .or_else(|| main.recording_notice.clone());
            checker.flow(&format!("{path}."), &flow)?;
            // The document's reject list applies to every number.
            flow.reject.extend(main.reject.iter().cloned());
            numbers.push((number, (i + 1) as u8));
            flows.push(flow);
        }
        flows.insert(0, main);
        let mut flow = Self::new(flows);
        flow.numbers = numbers;
        Ok(flow)
    }

    /// The first year past the holiday table that any schedule would need (for a warning).
    pub fn has_schedule(&self) -> bool {
        self.flows.iter().any(|f| f.schedule.is_some())
    }

    /// The flow for the number called, and the branch for this caller at this time.
    pub fn entry(&self, call: &Call<'_>) -> Entry {
        let flow = call
            .to
            .and_then(|to| self.numbers.iter().find(|(n, _)| n == to))
            .map_or(0, |(_, i)| *i);
        let f = &self.flows[usize::from(flow)];
        let branch = if f.anonymous.is_some() && Caller::from_param(call.from) == Caller::Withheld {
            Branch::Anonymous
        } else if let Some(schedule) = &f.schedule {
            match schedule.branch_at(call.now) {
                Branch::Holiday if schedule.holiday.is_none() => Branch::AfterHours,
                other => other,
            }
        } else {
            Branch::Main
        };
        Entry { flow, branch }
    }

    /// True when this caller is on the flow's `reject` list.
    pub fn rejects(&self, entry: Entry, from: Option<&str>) -> bool {
        let from = from.unwrap_or("");
        !from.is_empty()
            && self.flows[usize::from(entry.flow)]
                .reject
                .iter()
                .any(|prefix| from.starts_with(prefix.as_str()))
    }

    /// True when the answer for `entry` is the same for every caller (so it can be cached).
    pub fn answer_is_shared(&self, entry: Entry) -> bool {
        !matches!(self.root(entry), Some(Step::Forward(_)))
    }

    fn root(&self, entry: Entry) -> Option<&Step> {
        let f = self.flows.get(usize::from(entry.flow))?;
        match entry.branch {
            Branch::Main => f.then.as_ref(),
            Branch::Anonymous => f.anonymous.as_ref(),
            Branch::Open => f.schedule.as_ref().map(|s| &s.open),
            Branch::AfterHours => f.schedule.as_ref().map(|s| &s.after_hours),
            Branch::Holiday => f.schedule.as_ref().and_then(|s| s.holiday.as_ref()),
        }
    }

    /// The step at `at`, and the flow it belongs to.
    fn step(&self, at: &StepPath) -> Option<(&Flow, &Step)> {
        let flow = self.flows.get(usize::from(at.flow))?;
        let mut step = self.root(Entry {
            flow: at.flow,
            branch: at.branch,
        })?;
        for key in at.keys() {
            let Step::Menu(menu) = step else { return None };
            step = menu.options.get(key.to_string().as_str())?;
        }
        Some((flow, step))
    }

    /// The answer to a new call. `<Reject>` comes alone: nothing may precede it.
    pub fn answer(&self, entry: Entry, from: Option<&str>, links: &Links) -> VoiceResponse {
        let f = &self.flows[usize::from(entry.flow)];
        let root = self.root(entry);
        if matches!(root, Some(Step::Reject {})) || self.rejects(entry, from) {
            return VoiceResponse::new().reject(Reject::Rejected);
        }
        let mut r = VoiceResponse::new();
        if let Some(greeting) = &f.greeting {
            r = r.say(f.say(greeting));
        }
        if let Some(url) = &f.play {
            r = r.play(Play::new(url));
        }
        let at = StepPath::root(entry.flow, entry.branch);
        match root {
            Some(step) => f.step(r, step, &at, Caller::from_param(from), links),
            None => r.hangup(),
        }
    }

    /// The answer to a menu's `<Gather>`: `Digits`, or none when nothing was pressed.
    pub fn menu(
        &self,
        at: &StepPath,
        tries: u8,
        digits: Option<&str>,
        from: Option<&str>,
        links: &Links,
    ) -> VoiceResponse {
        let r = VoiceResponse::new();
        let Some((f, Step::Menu(menu))) = self.step(at) else {
            return restart(links);
        };
        let pressed = digits.map(str::trim).filter(|d| !d.is_empty());
        let Some(pressed) = pressed else {
            let no_input = menu.no_input.clone().unwrap_or_else(|| {
                f.phrase(
                    "We did not receive a choice.",
                    "選択が確認できませんでした。",
                )
            });
            return f.retry(r.say(f.say(&no_input)), menu, at, tries, links);
        };
        if pressed == "*" {
            return f.offer_menu(r, menu, at, tries, links);
        }
        if menu.back.as_deref() == Some(pressed)
            && let Some(parent) = at.parent()
            && let Some((_, Step::Menu(above))) = self.step(&parent)
        {
            return f.offer_menu(r, above, &parent, 0, links);
        }
        match (
            menu.options.get(pressed),
            Key::parse(pressed).and_then(|k| at.child(k)),
        ) {
            (Some(step), Some(next)) => f.step(r, step, &next, Caller::from_param(from), links),
            _ => {
                let invalid = menu.invalid.clone().unwrap_or_else(|| {
                    f.phrase(
                        "Sorry, that is not an option.",
                        "申し訳ありません。その番号は選択できません。",
                    )
                });
                f.retry(r.say(f.say(&invalid)), menu, at, tries, links)
            }
        }
    }

    /// After the `hunt`-th number of a forward: done if someone took the call, else the next
    /// number, else the fallback voicemail.
    ///
    /// Twilio documents `<Number url>` as TwiML "run on the called party's end, after they
    /// answer, but before the parties are connected", which may "decline the phone call using
    /// <Gather> and <Hangup>" (https://www.twilio.com/docs/voice/twiml/number, and the call
    /// whisper glossary, https://www.twilio.com/docs/glossary/call-whisper). Which
    /// `DialCallStatus` a declined whisper reports is not stated there; the action request also
    /// carries `DialBridged`, whether the two parties were connected. So a screened forward only
    /// counts as taken when Twilio says the parties were bridged (`DialBridged=true`): a
    /// screened-out leg (a carrier voicemail cannot press 1), whatever its status, and a request
    /// that does not say, go on to the next number or the fallback; the safe side of a doubt is
    /// a voicemail prompt, not a lost message. An unscreened forward keeps the status rule.
    pub fn dial_result(
        &self,
        at: &StepPath,
        hunt: u8,
        status: Option<&str>,
        bridged: Option<&str>,
        from: Option<&str>,
        links: &Links,
    ) -> VoiceResponse {
        let r = VoiceResponse::new();
        let step = self.step(at);
        let screened = matches!(step, Some((_, Step::Forward(forward))) if forward.screen);
        let connected = matches!(status, Some("completed" | "answered"));
        let answered = if screened {
            connected && bridged == Some("true")
        } else {
            connected && bridged != Some("false")
        };
        if answered {
            return r.hangup();
        }
        let Some((f, Step::Forward(forward))) = step else {
            return restart(links);
        };
        let next = usize::from(hunt) + 1;
        if next < forward.targets().len() {
            return f.dial(r, forward, at, next as u8, Caller::from_param(from), links);
        }
        match &forward.fallback {
            Some(v) => f.voicemail(r, v, at, links),
            None => r
                .say(f.say(&f.phrase(
                    "Nobody is available to take your call. Goodbye.",
                    "ただいま電話に出ることができません。失礼いたします。",
                )))
                .hangup(),
        }
    }

    /// What the callee of a screened forward hears: who is calling, and "press 1".
    pub fn screen(&self, at: &StepPath, caller: &Caller, links: &Links) -> VoiceResponse {
        let f = self.step(at).map_or(&self.flows[0], |(f, _)| f);
        let japanese = f.japanese();
        let mut say = Say::new(if japanese {
            "お電話です。"
        } else {
            "A call from "
        });
        say = match caller {
            Caller::Number(n) => {
                let digits = match n.as_str().strip_prefix("+81") {
                    Some(national) if japanese => format!("0{national}"),
                    _ => n.as_str().to_owned(),
                };
                say.telephone(digits)
                    .text(if japanese { "からです。" } else { ". " })
            }
            Caller::Withheld => say.text(if japanese {
                "非通知です。"
            } else {
                "a withheld number. "
            }),
        };
        say = say.text(if japanese {
            "1を押すと応答します。"
        } else {
            "Press 1 to accept."
        });
        let say = f.defaults(say);
        let gather = Gather::new()
            .input(GatherInput::Dtmf)
            .num_digits(1)
            .timeout(SCREEN_TIMEOUT)
            .action(links.to(&Route::ScreenResult))
            .method(Method::Post)
            .say(say);
        // No key, or the key never comes: the leg hangs up and the caller goes on.
        VoiceResponse::new().gather(gather).hangup()
    }

    /// The callee's key: 1 connects (an empty document ends the whisper), anything else hangs
    /// up that leg.
    pub fn screen_result(digits: Option<&str>) -> VoiceResponse {
        match digits.map(str::trim) {
            Some("1") => VoiceResponse::new(),
            _ => VoiceResponse::new().hangup(),
        }
    }

    /// After a voicemail was recorded.
    pub fn voicemail_done(&self, at: &StepPath) -> VoiceResponse {
        let (f, goodbye) = match self.step(at) {
            Some((f, Step::Voicemail(v))) => (f, v.goodbye.clone()),
            Some((f, Step::Forward(fw))) => {
                (f, fw.fallback.as_ref().and_then(|v| v.goodbye.clone()))
            }
            Some((f, _)) => (f, None),
            None => (&self.flows[0], None),
        };
        let goodbye = goodbye.unwrap_or_else(|| {
            f.phrase(
                "Thank you. Goodbye.",
                "ありがとうございました。失礼いたします。",
            )
        });
        VoiceResponse::new().say(f.say(&goodbye)).hangup()
    }
}

/// A step address the current flow no longer has (it changed mid-call): start over.
fn restart(links: &Links) -> VoiceResponse {
    VoiceResponse::new().redirect(Redirect::new(links.to(&Route::Answer)).method(Method::Post))
}

impl Flow {
    fn step(
        &self,
        r: VoiceResponse,
        step: &Step,
        at: &StepPath,
        caller: Caller,
        links: &Links,
    ) -> VoiceResponse {
        match step {
            Step::Menu(menu) => self.offer_menu(r, menu, at, 0, links),
            Step::Forward(f) => self.dial(r, f, at, 0, caller, links),
            Step::Voicemail(v) => self.voicemail(r, v, at, links),
            Step::Message(s) => r.say(self.say(s)).hangup(),
            // Reject is refused at start-up anywhere but the start of a call.
            Step::Hangup {} | Step::Reject {} => r.hangup(),
        }
    }

    fn offer_menu(
        &self,
        r: VoiceResponse,
        menu: &Menu,
        at: &StepPath,
        tries: u8,
        links: &Links,
    ) -> VoiceResponse {
        let here = Route::Menu {
            at: at.clone(),
            tries,
        };
        let gather = Gather::new()
            .input(GatherInput::Dtmf)
            .num_digits(1)
            .timeout(menu.timeout)
            // `#` is a key like any other here, not "done".
            .finish_on_key("")
            .action(links.to(&here))
            .method(Method::Post)
            .say(self.say(&menu.prompt));
        // Nothing pressed: the same action without `Digits`.
        r.gather(gather)
            .redirect(Redirect::new(links.to(&here)).method(Method::Post))
    }

    /// The menu again, or a goodbye once its retries are spent.
    fn retry(
        &self,
        r: VoiceResponse,
        menu: &Menu,
        at: &StepPath,
        tries: u8,
        links: &Links,
    ) -> VoiceResponse {
        if tries >= menu.retries {
            let bye = self.phrase(
                "Please call again later. Goodbye.",
                "恐れ入りますが、改めておかけ直しください。失礼いたします。",
            );
            return r.say(self.say(&bye)).hangup();
        }
        self.offer_menu(r, menu, at, tries + 1, links)
    }

    fn dial(
        &self,
        r: VoiceResponse,
        f: &Forward,
        at: &StepPath,
        hunt: u8,
        caller: Caller,
        links: &Links,
    ) -> VoiceResponse {
        let Some(target) = f.targets().get(usize::from(hunt)) else {
            return r.hangup();
        };
        let mut number = Number::new(target.as_str());
        if f.screen {
            number = number
                .url(links.to(&Route::Screen {
                    at: at.clone(),
                    caller,
                }))
                .method(Method::Post);
        }
        let mut dial = Dial::number(number)
            .timeout(f.timeout)
            .time_limit(f.time_limit)
            .answer_on_bridge(f.screen)
            .action(links.to(&Route::DialResult {
                at: at.clone(),
                hunt,
            }))
            .method(Method::Post);
        if let Some(caller_id) = &f.caller_id {
            dial = dial.caller_id(caller_id.as_str());
        }
        r.dial(dial)
    }

    fn voicemail(
        &self,
        mut r: VoiceResponse,
        v: &Voicemail,
        at: &StepPath,
        links: &Links,
    ) -> VoiceResponse {
        if let Some(notice) = &self.recording_notice {
            r = r.say(self.say(notice));
        }
        let prompt = v.prompt.clone().unwrap_or_else(|| {
            self.phrase(
                "Please leave a message after the beep. Press the pound key when you are done.",
                "発信音のあとにメッセージをお話しください。終わりましたらシャープを押してください。",
            )
        });
        let mut record = Record::new()
            .action(links.to(&Route::Voicemail { at: at.clone() }))
            .method(Method::Post)
            .max_length(v.max_length)
            .finish_on_key("#")
            .play_beep(true)
            .transcribe(v.transcribe);
        // Without a callback Twilio keeps the text to itself: `Voicemail Transcribed` needs it.
        if v.transcribe {
            record = record.transcribe_callback(links.to(&Route::Transcription));
        }
        // Without an action, Twilio would request this same URL again and replay the flow.
        r.say(self.say(&prompt)).record(record).hangup()
    }

    fn say(&self, speech: &Speech) -> Say {
        speech.to_say(self.language.as_deref(), self.voice.as_deref())
    }

    fn defaults(&self, mut say: Say) -> Say {
        if let Some(language) = &self.language {
            say = say.language(language.as_str());
        }
        if let Some(voice) = &self.voice {
            say = say.voice(voice.as_str());
        }
        say
    }

    fn japanese(&self) -> bool {
        self.language
            .as_deref()
            .is_some_and(|l| l.starts_with("ja"))
    }

    /// Built-in phrases follow the flow's language: Japanese for `ja-*`, English otherwise.
    fn phrase(&self, english: &str, japanese: &str) -> Speech {
        Speech::Text(if self.japanese() { japanese } else { english }.to_owned())
    }
}

fn invalid(path: &str, reason: impl std::fmt::Display) -> FlowError {
    FlowError::Invalid {
        path: mask_digits(path.trim_end_matches('.')),
        reason: mask_digits(&reason.to_string()),
    }
}

/// The checks serde cannot do, each error naming the path as serde_path_to_error does.
struct Checker<'a> {
    extra_voices: &'a [String],
}

impl Checker<'_> {
    fn flow(&mut self, p: &str, f: &Flow) -> Result<(), FlowError> {
        self.voice(&format!("{p}voice"), f.voice.as_deref())?;
        if let Some(url) = &f.play {
            check_url(&format!("{p}play"), url)?;
        }
        for (name, speech) in [
            ("greeting", &f.greeting),
            ("recording_notice", &f.recording_notice),
        ] {
            if let Some(s) = speech {
                self.speech(&format!("{p}{name}"), s)?;
            }
        }
        for (i, prefix) in f.reject.iter().enumerate() {
            let ok = prefix.len() >= 2
                && prefix.starts_with('+')
                && prefix[1..].bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(invalid(
                    &format!("{p}reject[{i}]"),
                    "expected + and digits (a number or a prefix)",
                ));
            }
        }
        if let Some(step) = &f.anonymous {
            self.step(&format!("{p}anonymous"), step, 0, true)?;
        }
        match (&f.then, &f.schedule) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &format!("{p}schedule"),
                    "set then or schedule, not both",
                ));
            }
            (Some(step), None) => self.step(&format!("{p}then"), step, 0, true)?,
            (None, Some(s)) => {
                self.step(&format!("{p}schedule.open"), &s.open, 0, true)?;
                self.step(&format!("{p}schedule.after_hours"), &s.after_hours, 0, true)?;
                if let Some(h) = &s.holiday {
                    self.step(&format!("{p}schedule.holiday"), h, 0, true)?;
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    fn step(
        &mut self,
        p: &str,
        step: &Step,
        depth: usize,
        at_start: bool,
    ) -> Result<(), FlowError> {
        match step {
            Step::Menu(m) => self.menu(&format!("{p}.menu"), m, depth),
            Step::Forward(f) => self.forward(&format!("{p}.forward"), f),
            Step::Voicemail(v) => self.voicemail(&format!("{p}.voicemail"), v),
            Step::Message(s) => self.speech(&format!("{p}.message"), s),
            Step::Hangup {} => Ok(()),
            Step::Reject {} if at_start => Ok(()),
            Step::Reject {} => Err(invalid(
                &format!("{p}.reject"),
                "reject is only possible where a call starts (the call is already answered here)",
            )),
        }
    }

    fn menu(&mut self, p: &str, m: &Menu, depth: usize) -> Result<(), FlowError> {
        if depth >= MAX_KEYS {
            return Err(invalid(p, format!("menus nest at most {MAX_KEYS} deep")));
        }
        self.speech(&format!("{p}.prompt"), &m.prompt)?;
        for (name, s) in [("invalid", &m.invalid), ("no_input", &m.no_input)] {
            if let Some(s) = s {
                self.speech(&format!("{p}.{name}"), s)?;
            }
        }
        if m.options.is_empty() {
            return Err(invalid(&format!("{p}.options"), "is empty"));
        }
        if !(1..=MENU_TIMEOUT_MAX).contains(&m.timeout) {
            return Err(invalid(
                &format!("{p}.timeout"),
                format!("must be 1 to {MENU_TIMEOUT_MAX} seconds"),
            ));
        }
        if m.retries > MENU_RETRIES_MAX {
            return Err(invalid(
                &format!("{p}.retries"),
                format!("at most {MENU_RETRIES_MAX}"),
            ));
        }
        if let Some(back) = &m.back {
            if depth == 0 {
                return Err(invalid(
                    &format!("{p}.back"),
                    "the top menu has nothing to go back to",
                ));
            }
            if Key::parse(back).is_none() || back == "*" || m.options.contains_key(back) {
                return Err(invalid(
                    &format!("{p}.back"),
                    "must be one key of 0-9 or # that is not an option",
                ));
            }
        }
        for (key, step) in &m.options {
            let path = format!("{p}.options.{key}");
            if key == "*" {
                return Err(invalid(&path, "* is reserved: it repeats the menu"));
            }
            if Key::parse(key).is_none() {
                return Err(invalid(
                    &path,
                    format!("{key:?} is not one key of 0-9 or #"),
                ));
            }
            match step {
                Step::Menu(sub) => self.menu(&format!("{path}.menu"), sub, depth + 1)?,
                other => self.step(&path, other, depth + 1, false)?,
            }
        }
        Ok(())
    }

    fn forward(&mut self, p: &str, f: &Forward) -> Result<(), FlowError> {
        match (&f.number, f.numbers.len()) {
            (Some(_), 0) => {}
            (None, 1..=HUNT_MAX) => {}
            (None, 0) => return Err(invalid(p, "needs number or numbers")),
            (Some(_), _) => return Err(invalid(p, "set number or numbers, not both")),
            (None, _) => {
                return Err(invalid(
                    &format!("{p}.numbers"),
                    format!("at most {HUNT_MAX} numbers"),
                ));
            }
        }
        if !RING_TIMEOUT_RANGE.contains(&f.timeout) {
            return Err(invalid(
                &format!("{p}.timeout"),
                range_text(&RING_TIMEOUT_RANGE),
            ));
        }
        if !limits::TIME_LIMIT_SECONDS.contains(&f.time_limit) {
            return Err(invalid(
                &format!("{p}.time_limit"),
                range_text(&limits::TIME_LIMIT_SECONDS),
            ));
        }
        match &f.fallback {
            Some(v) => self.voicemail(&format!("{p}.fallback"), v),
            None => Ok(()),
        }
    }

    fn voicemail(&mut self, p: &str, v: &Voicemail) -> Result<(), FlowError> {
        if !limits::RECORD_MAX_LENGTH_SECONDS.contains(&v.max_length) {
            return Err(invalid(
                &format!("{p}.max_length"),
                range_text(&limits::RECORD_MAX_LENGTH_SECONDS),
            ));
        }
        for (name, s) in [("prompt", &v.prompt), ("goodbye", &v.goodbye)] {
            if let Some(s) = s {
                self.speech(&format!("{p}.{name}"), s)?;
            }
        }
        Ok(())
    }

    fn speech(&mut self, p: &str, s: &Speech) -> Result<(), FlowError> {
        if s.text().trim().is_empty() {
            return Err(invalid(p, "a spoken text is empty"));
        }
        if let Speech::Detailed(d) = s {
            self.voice(&format!("{p}.voice"), d.voice.as_deref())?;
            if d.loops.is_some_and(|n| !limits::LOOP_COUNT.contains(&n)) {
                return Err(invalid(
                    &format!("{p}.loop"),
                    range_text(&limits::LOOP_COUNT),
                ));
            }
        }
        Ok(())
    }

    fn voice(&mut self, p: &str, voice: Option<&str>) -> Result<(), FlowError> {
        match voice {
            Some(v) if !voices::is_known(v, self.extra_voices) => Err(invalid(
                p,
                format!(
                    "{v:?} is not a voice Twilio publishes (a typo? a new voice goes in extra_voices)"
                ),
            )),
            _ => Ok(()),
        }
    }
}

fn range_text(range: &std::ops::RangeInclusive<u32>) -> String {
    format!("must be {} to {}", range.start(), range.end())
}

/// Audio may be served over http; the https rule (`limits::is_https_url`) is for URLs Twilio
/// fetches TwiML from or posts callbacks to.
fn check_url(path: &str, url: &str) -> Result<(), FlowError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => Ok(()),
        _ => Err(invalid(path, "must be an http(s) URL")),
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

    #[test]
    fn default_flow_greets_and_plays_like_the_demo() {
        let flow = CallFlow::default();
        let entry = flow.entry(&Call {
            from: None,
            to: None,
            now: 0,
        });
        let xml = flow.answer(entry, None, &links()).to_xml();
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
    fn malformed_flows_are_refused_with_the_reason() {
        for (json, reason) in [
            ("{", "not valid JSON"),
            (r#"{"greting": "typo"}"#, "unknown field"),
            (
                r#"{"then": {"forward": {"number": "03-1234-5678"}}}"#,
                "E.164",
            ),
            (r#"{"then": {"forward": {}}}"#, "needs number or numbers"),
            (
                r#"{"then": {"forward": {"number": "+81312345678", "numbers": ["+81312345679"]}}}"#,
                "not both",
            ),
            (
                r#"{"then": {"menu": {"prompt": "p", "options": {}}}}"#,
                "is empty",
            ),
            (
                r#"{"then": {"menu": {"prompt": "p", "options": {"12": {"message": "x"}}}}}"#,
                "not one key",
            ),
            (
                r#"{"then": {"menu": {"prompt": "p", "options": {"*": {"message": "x"}}}}}"#,
                "repeats the menu",
            ),
            (
                r#"{"then": {"menu": {"prompt": "p", "back": "9", "options": {"1": {"message": "x"}}}}}"#,
                "nothing to go back to",
            ),
            (
                r#"{"then": {"menu": {"prompt": "p", "retries": 6, "options": {"1": {"hangup": {}}}}}}"#,
                "retries",
            ),
            (r#"{"play": "ftp://example.com/a.mp3"}"#, "http(s) URL"),
            (r#"{"greeting": " "}"#, "empty"),
            (r#"{"greeting": {"text": "x", "loop": 0}}"#, "greeting.loop"),
            (
                r#"{"then": {"forward": {"number": "+81312345678", "timeout": 0}}}"#,
                "timeout",
            ),
            (r#"{"then": {"teleport": {}}}"#, "unknown variant"),
            (r#"{"reject": ["0312345678"]}"#, "reject[0]"),
            (
                r#"{"then": {"hangup": {}}, "schedule": {"hours": {}, "open": {"hangup": {}}, "after_hours": {"hangup": {}}}}"#,
                "not both",
            ),
            // The path names the number's flow, masked: start-up errors are logged.
            (r#"{"numbers": {"0312345678": {}}}"#, "numbers.031*****78"),
        ] {
            let err = CallFlow::from_json(json).unwrap_err().to_string();
            assert!(err.contains(reason), "{json}: {err}");
            assert!(!err.contains("312345678"), "{json}: {err}");
        }
    }
}
