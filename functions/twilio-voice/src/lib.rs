//! The Twilio voice domain shared by the `incoming-call` and `outbound-call` functions: TwiML,
//! webhook signatures, SSM-backed credentials, the Calls API client and phone numbers.
//! Only `http_event`, the adapter both functions share, knows Lambda's event types.

pub mod calls;
pub mod credentials;
pub mod http_event;
pub mod limits;
pub mod logging;
pub mod phone;
pub mod settings;
pub mod signature;
pub mod ssm;
pub mod twiml;
