//! The Twilio voice domain shared by the `incoming-call` and `outbound-call` functions: TwiML,
//! webhook signatures, SSM-backed credentials, the Calls API client, phone numbers, the call
//! ledger (DynamoDB), the domain events (EventBridge) and the pace of outbound calls.
//! Only `http_event`, the adapter both functions share, knows Lambda's event types.

pub mod alerts;
pub mod aws;
pub mod calls;
pub mod credentials;
pub mod events;
pub mod http_event;
pub mod ledger;
pub mod limits;
pub mod logging;
pub mod pacing;
pub mod phone;
pub mod settings;
pub mod signature;
pub mod ssm;
pub mod stepfunctions;
pub mod twiml;
