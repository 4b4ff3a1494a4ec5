//! A real browser for the console's tests: Debian's headless Chromium or Firefox ESR driven
//! over WebDriver (chromedriver or geckodriver, with fantoccini), inside a test's network
//! namespace, with a fresh profile. Dropping it ends the session and kills the driver and every
//! browser process it started, also when the test fails, and removes the profile.

use std::{
    future::Future,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::{
    netns::Netns,
    process::{ChildGuard, TempDir, free_port},
    wait::probe_within,
};

/// How long a page condition may take to hold.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Chromium's flags: headless, and nothing that would reach for the network (the machine's is
/// closed) or a GPU.
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-crash-reporter",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Firefox's preferences: nothing that would reach for the network.
const FIREFOX_PREFS: [(&str, bool); 8] = [
    ("app.update.enabled", false),
    ("browser.shell.checkDefaultBrowser", false),
    ("browser.safebrowsing.malware.enabled", false),
    ("browser.safebrowsing.phishing.enabled", false),
    ("datareporting.policy.dataSubmissionEnabled", false),
    ("extensions.update.enabled", false),
    ("network.captive-portal-service.enabled", false),
    ("network.connectivity-service.enabled", false),
];

/// Which browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    fn driver(self) -> &'static str {
        match self {
            Self::Chromium => "chromedriver",
            Self::Firefox => "geckodriver",
        }
    }

    /// The WebDriver capabilities of a session with the profile in `profile`.
    fn capabilities(self, profile: &std::path::Path) -> serde_json::Map<String, Value> {
        let capabilities = match self {
            Self::Chromium => {
                let mut args: Vec<String> = CHROMIUM_ARGS.map(str::to_owned).to_vec();
                args.push(format!("--user-data-dir={}", profile.display()));
                json!({
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
                })
            }
            Self::Firefox => json!({
                "browserName": "firefox",
                "moz:firefoxOptions": {
                    "binary": "/usr/bin/firefox-esr",
                    "args": ["-headless", "-profile", profile, "--width=1280", "--height=900"],
                    "prefs": serde_json::Map::from_iter(
                        FIREFOX_PREFS.map(|(name, value)| (name.to_owned(), json!(value)))
                    ),
                },
            }),
        };
        serde_json::from_value(capabilities).unwrap()
    }

    /// What its screenshots' names start with: Chromium's are the docs' pictures.
    fn shot_prefix(self) -> &'static str {
        match self {
            Self::Chromium => "",
            Self::Firefox => "firefox-",
        }
    }
}

pub struct Browser {
    engine: Engine,
    /// `None` once closed.
    client: Option<Client>,
    runtime: tokio::runtime::Runtime,
    driver: ChildGuard,
    profile: TempDir,
}

impl Browser {
    /// Starts the engine's WebDriver and a browser session inside `netns`. The calling thread
    /// must be inside `netns` too (see [`Netns::run`]): the WebDriver connection is made from
    /// it.
    pub fn start(netns: &Netns, engine: Engine) -> Self {
        let profile = TempDir::new(engine.driver());
        let port = free_port();
        let mut command = netns.command(engine.driver());
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the browser's processes are in it, and are killed with it.
            .process_group(0);
        let driver = ChildGuard::spawn(engine.driver(), &mut command);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        let mut browser = Self {
            engine,
            client: None,
            runtime,
            driver,
            profile,
        };
        let capabilities = engine.capabilities(browser.profile.path());
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        let client = browser.runtime.block_on(async {
            loop {
                let connected = ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await;
                match connected {
                    Ok(client) => break client,
                    // The driver is not listening yet.
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(err) => panic!("no WebDriver session: {err}"),
                }
            }
        });
        browser.client = Some(client);
        browser
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Runs a browser command (or several) to its end.
    pub fn run<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    pub fn goto(&self, url: &str) {
        self.run(self.client().goto(url))
            .unwrap_or_else(|err| panic!("cannot open {url}: {err}"));
    }

    /// The page's HTML as the browser holds it now (scripts' changes included).
    pub fn source(&self) -> String {
        self.run(self.client().source()).expect("page source")
    }

    /// The visible text of the first element `css` selects.
    pub fn text(&self, css: &str) -> String {
        self.run(async { self.client().find(Locator::Css(css)).await?.text().await })
            .unwrap_or_else(|err| panic!("no text at {css}: {err}"))
    }

    /// Clicks the element `xpath` selects.
    pub fn click(&self, xpath: &str) {
        self.run(async {
            self.client()
                .find(Locator::XPath(xpath))
                .await?
                .click()
                .await
        })
        .unwrap_or_else(|err| panic!("cannot click {xpath}: {err}"));
    }

    pub fn path(&self) -> String {
        self.run(self.client().current_url())
            .expect("current URL")
            .path()
            .to_owned()
    }

    /// Waits until `condition` holds on the page, polling; panics with `what` and the page
    /// after [`PATIENCE`].
    pub fn wait_until(&self, what: &str, mut condition: impl FnMut(&Self) -> bool) {
        if probe_within(PATIENCE, || condition(self).then_some(())).is_none() {
            panic!(
                "{what}: not within {PATIENCE:?}; the page:\n{}",
                self.source()
            );
        }
    }

    /// Saves a PNG of the whole page (its first 3,000 pixels or so), at the window's width, as
    /// `target/console-screenshots/<name>.png` (`firefox-<name>.png` from Firefox).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .run(async {
                let client = self.client();
                let (_, _, width, height) = client.get_window_rect().await?;
                let (width, height) = (width as u32, height as u32);
                let page = client
                    .execute("return document.documentElement.scrollHeight;", vec![])
                    .await?
                    .as_u64()
                    .unwrap_or(0) as u32;
                // Taller for the shot (the window's frame takes some of its height), then back.
                client
                    .set_window_size(width, (page + height / 6).clamp(height, 3200))
                    .await?;
                let png = client.screenshot().await;
                client.set_window_size(width, height).await?;
                png
            })
            .expect("screenshot");
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/console-screenshots"
        ));
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{}{name}.png", self.engine.shot_prefix()));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.run(self.client().set_window_size(width, height))
            .expect("window size");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // SAFETY: kill(2) on the process group of our own child, which has not been reaped.
        unsafe { libc::kill(-(self.driver.pid() as i32), libc::SIGKILL) };
        // Anything of the profile's that left the group.
        let profile = self.profile.path().display().to_string();
        for process in processes_mentioning(&profile) {
            // SAFETY: kill(2) on a pid read from /proc; at worst it is already gone.
            unsafe { libc::kill(process, libc::SIGKILL) };
        }
    }
}

/// Pids whose command line holds `text`.
fn processes_mentioning(text: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(text))
        })
        .collect()
}
