//! The invitee's path in a real browser: the accept link from a delivered email, opened in
//! headless Chromium (Debian's `chromium` and `chromium-driver`), the shared secret typed into the
//! form, and the invitation accepted. The test leaves screenshots of the form and the result in
//! `target/browser-screenshots/`.
//!
//! Without Chromium the test says so and passes, unless `CI` or `TANDEM_REQUIRE_BROWSER` is set,
//! where a missing browser is a failure (`.ci/run` installs it).

mod common;

use base64::Engine;
use common::{Backend, TestApp, json};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tandem::store::entitlements::{Entitlement, TableEntitlements};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ACCOUNT: &str = "https://api.bank.example/accounts/account/7443d485";
const SECRET: &str = "obsolete obese octopus";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process, stopped when dropped.
struct Driver {
    process: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The few W3C WebDriver commands the test needs.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn start(driver: &Driver, profile: &Path) -> Self {
        let http = tandem::app::http_client().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=900,700",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let res: Value = http
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        Self {
            http,
            session: format!("{}/session/{session}", driver.url),
        }
    }

    /// Runs a command; the WebDriver error object when it fails.
    async fn try_command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let res: Value = request.send().await.unwrap().json().await.unwrap();
        if res["value"].get("error").is_some() {
            Err(res["value"].clone())
        } else {
            Ok(res["value"].clone())
        }
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|err| panic!("WebDriver {path}: {err}"))
    }

    async fn open(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The text of the page's body once it contains `needle`: a click that submits a form
    /// returns before the next page has loaded, so the test waits for the page it expects.
    async fn wait_for_text(&self, needle: &str) -> String {
        let mut last = String::new();
        for _ in 0..150 {
            let found = self
                .try_command(
                    Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": "body"})),
                )
                .await;
            if let Ok(element) = found
                && let Some(id) = element[ELEMENT].as_str()
                && let Ok(text) = self
                    .try_command(Method::GET, &format!("/element/{id}/text"), None)
                    .await
            {
                last = text.as_str().unwrap_or_default().to_owned();
                if last.contains(needle) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never said {needle:?}; it said: {last}");
    }

    async fn screenshot(&self, to: &Path) {
        let png = self.command(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(to, bytes).unwrap();
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

fn browser_available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("TANDEM_REQUIRE_BROWSER").is_some();
        assert!(
            !required,
            "{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver"
        );
        eprintln!(
            "SKIPPED: the browser test needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        );
    }
    present
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        process,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = tandem::app::http_client().unwrap();
    for _ in 0..100 {
        if let Ok(res) = http.get(format!("{}/status", driver.url)).send().await
            && res.status().is_success()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not become ready");
}

/// Waits for the dev mailer's `.eml` file and returns the accept link in its text part.
async fn accept_link_from_the_email(mail_dir: &Path) -> String {
    for _ in 0..200 {
        let files: Vec<PathBuf> = std::fs::read_dir(mail_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(file) = files.first() {
            let raw = std::fs::read(file).unwrap();
            let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
            let text = message.body_text(0).unwrap().into_owned();
            assert!(!text.contains(SECRET), "the email never carries the secret");
            let start = text.find("http://").expect("a link in the email");
            let link: String = text[start..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            assert!(link.contains("/invitations/accept?invitationId="), "{link}");
            return link;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no email was delivered to {}", mail_dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitee_accepts_in_a_browser_from_the_emailed_link() {
    if !browser_available() {
        return;
    }
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.email.poll_interval_ms = 50).await;
    TableEntitlements::new(app.db.clone())
        .replace_all(&[Entitlement {
            customer_id: "customer-alice".into(),
            resource_uri: ACCOUNT.into(),
            role: "owner".into(),
            joint_owners_disabled: false,
        }])
        .await
        .unwrap();
    let alice = app.customer("customer-alice");
    let res = app
        .with(&alice, Method::POST, "/invitations/invitations")
        .json(&json!({
            "type": "joint", "accountUri": ACCOUNT, "sharedSecret": SECRET,
            "inviterFullName": "Alice Inviter", "emailAddress": "max.peck@example.com",
            "firstName": "Max", "lastName": "Peck",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let invitation = json(res).await;
    let id = invitation["_id"].as_str().unwrap().to_owned();

    let link = accept_link_from_the_email(&app.config.data_dir.join("mail")).await;
    assert!(link.ends_with(&id), "{link}");

    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let profile = app.config.data_dir.join("chromium-profile");
    let driver = start_driver().await;
    let browser = Browser::start(&driver, &profile).await;
    browser.open(&link).await;
    browser
        .screenshot(&screenshots.join("accept-form.png"))
        .await;
    browser.type_into("#sharedSecret", SECRET).await;
    browser.click("button[type=submit]").await;
    let outcome = browser.wait_for_text("your invitation is accepted").await;
    browser
        .screenshot(&screenshots.join("accept-result.png"))
        .await;
    browser.close().await;
    assert!(
        !outcome.contains(SECRET),
        "the result page never echoes the secret"
    );

    let after = app
        .get_json(&alice, &format!("/invitations/invitations/{id}"))
        .await;
    assert_eq!(after["state"], "accepted");
    for shot in ["accept-form.png", "accept-result.png"] {
        assert!(
            std::fs::metadata(screenshots.join(shot)).unwrap().len() > 1000,
            "{shot}"
        );
    }
}
