//! Turning a rendered email into a MIME message (multipart/alternative: text, then HTML).

use super::templates::RenderedEmail;
use anyhow::Context;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

/// Builds the message for outbox entry `id`. Its `Message-ID` derives from `id`, so a retry of
/// a message whose first delivery was not acknowledged carries the same id and receivers can
/// tell it is the same message.
pub fn build(
    id: &str,
    from: &Mailbox,
    recipient: &str,
    email: RenderedEmail,
) -> anyhow::Result<Message> {
    let to: Mailbox = recipient
        .parse()
        .context("the recipient is not a valid email address")?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject)
        .message_id(Some(format!("<{id}@{}>", from.email.domain())))
        .date_now()
        .multipart(MultiPart::alternative_plain_html(email.text, email.html))
        .context("building the MIME message")
}
