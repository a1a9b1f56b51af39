//! A minimal SMTP server for tests: enough ESMTP for lettre without TLS (EHLO, AUTH PLAIN,
//! MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT). It records every message it accepts, and can
//! refuse recipients for good (550) the way a relay refuses a mailbox that does not exist.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent, dot-stuffing undone.
    pub data: Vec<u8>,
}

pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

/// `user\0password`, when the server requires AUTH PLAIN before MAIL.
type Login = Option<Arc<String>>;

/// What the server requires and refuses.
#[derive(Clone, Default)]
struct Rules {
    login: Login,
    /// Recipients whose address starts with this are refused with a permanent 550.
    refused_prefix: Option<Arc<String>>,
}

impl SmtpServer {
    /// Listens on 127.0.0.1 at `port` (0: any free port).
    pub async fn bind(port: u16) -> Self {
        Self::start(port, Rules::default()).await
    }

    /// Like `bind(0)`, but accepts mail only after AUTH PLAIN with these credentials.
    pub async fn with_login(user: &str, password: &str) -> Self {
        let rules = Rules {
            login: Some(Arc::new(format!("{user}\0{password}"))),
            ..Rules::default()
        };
        Self::start(0, rules).await
    }

    /// Like `bind(0)`, but refuses for good (550 5.1.1) every recipient whose address starts
    /// with `prefix`.
    pub async fn refusing(prefix: &str) -> Self {
        let rules = Rules {
            refused_prefix: Some(Arc::new(prefix.to_owned())),
            ..Rules::default()
        };
        Self::start(0, rules).await
    }

    async fn start(port: u16, rules: Rules) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("binding the test SMTP server");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, sink.clone(), rules.clone()));
            }
        });
        Self {
            port,
            received,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Angle-bracketed address of `MAIL FROM:<a@b> ...` / `RCPT TO:<a@b>`.
fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line.rfind('>').unwrap_or(line.len());
    line[start..end].to_owned()
}

async fn session(
    stream: TcpStream,
    sink: Arc<Mutex<Vec<Received>>>,
    rules: Rules,
) -> std::io::Result<()> {
    let login = rules.login;
    use base64::Engine;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test.local ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut authenticated = login.is_none();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match command.as_str() {
            "EHLO" if login.is_some() => b"250-test.local\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n",
            "EHLO" => b"250-test.local\r\n250 8BITMIME\r\n",
            "HELO" | "NOOP" => b"250 OK\r\n",
            "AUTH" => {
                let given = line
                    .trim_end()
                    .strip_prefix("AUTH PLAIN ")
                    .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                    .map(|raw| String::from_utf8_lossy(&raw).into_owned());
                // PLAIN is `authzid \0 user \0 password`; lettre sends an empty authzid.
                authenticated = matches!((&given, &login), (Some(g), Some(l)) if g.strip_prefix('\0') == Some(l.as_str()));
                if authenticated {
                    b"235 2.7.0 authenticated\r\n"
                } else {
                    b"535 5.7.8 authentication credentials invalid\r\n"
                }
            }
            "MAIL" if !authenticated => b"530 5.7.0 authentication required\r\n",
            "MAIL" => {
                from = address(&line);
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                let recipient = address(&line);
                if rules
                    .refused_prefix
                    .as_deref()
                    .is_some_and(|prefix| recipient.starts_with(prefix.as_str()))
                {
                    b"550 5.1.1 mailbox unavailable\r\n"
                } else {
                    to.push(recipient);
                    b"250 OK\r\n"
                }
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.extend_from_slice(unstuffed.as_bytes());
                }
                sink.lock().unwrap().push(Received {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 OK queued\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}
