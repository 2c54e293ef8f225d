//! Churn soak: announcers join, crash (handle dropped) and leave gracefully (`shutdown`) at
//! random against one subscriber with etcd, while this harness keeps the ground truth and
//! checks the subscriber against it.
//!
//! The announcers run in a child process, `herald-bench churn-fleet`, so
//! that the RSS sampled here is the subscriber's (with this harness's bookkeeping), not the
//! fleet's. The harness sends the fleet one [`Order`] per line on its stdin; the fleet
//! answers each with an [`Answer`] on its stdout, stamped on arrival here. The harness also
//! watches the announce subject with a plain NATS subscription: the arrival of each token
//! there is the ground truth for "when did this instance last speak".
//!
//! Checked, as etcd's robustness suite checks its watches:
//! - every second, the subscriber's listing against the truth: no zombie (listed although
//!   dead for longer than TTL + a sweep margin), no live instance missing, nothing unknown;
//! - the `events()` stream, per instance: `Added` first, never twice without a `Removed`
//!   between, `Updated` only while listed, versions (epoch, seq) never going back, nothing
//!   missing against the truth (every join added, every death removed), no live instance
//!   removed before its TTL ran out since its last token (a false removal);
//! - removal delays per cause (crash: from the handle's drop; graceful: from the `shutdown`
//!   call), join delays, and the subscriber's RSS over time (with the live heap, when the
//!   program counts allocations with [`crate::alloc::Counting`]). The harness forgets an
//!   instance a few seconds after its removal, so that its own bookkeeping stays flat too.
//!
//! The decisions (what to do next, to whom) come from a generator seeded with
//! [`Settings::seed`]; the timing of a real system does not repeat, the sequence does.
//!
//! # Layout
//! - `settings.rs`: how a soak runs, and the service it announces;
//! - `protocol.rs`: the fleet's settings, and the orders and answers exchanged with it
//!   through [`crate::child`];
//! - `truth.rs`: one instance's truth (start, ending, last token, what the events said), and
//!   the kinds of event-stream violation;
//! - `soak.rs`: the harness's state and its bookkeeping; the checks are `impl Soak` blocks
//!   in `orders.rs` (the next action, the fleet's answers), `events.rs` (tokens and the
//!   event stream), `listing.rs` (the listing against the truth, RSS samples) and
//!   `finish.rs` (nothing missing at the end, the delays summed up);
//! - `driver.rs`: [`run`], the main loop through churn, settle and wind-down;
//! - `report.rs`, `display.rs`: the [`Report`], its criteria, and how it prints.

mod display;
mod driver;
mod events;
mod finish;
mod listing;
mod orders;
mod protocol;
mod report;
mod settings;
mod soak;
mod truth;

pub use driver::{FLEET_SUBCOMMAND, run};
pub use protocol::{Answer, FleetArgs, Order};
pub use report::Report;
pub use settings::{SERVICE, Settings};
