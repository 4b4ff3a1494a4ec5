//! Whether a user agent is a well-known crawler's. Tanner searched for the whole user agent as a
//! substring of its crawler file, so `Mozilla/5.0`, `x` and even `""` counted as bots; flowmon
//! matches the product tokens crawlers put in their user agents instead.

/// Product tokens of well-known crawlers. A user agent token matches one when it is equal to
/// it, ignoring ASCII case, or starts with it followed by `-` (`Googlebot-Image`,
/// `Baiduspider-render`, `coccocbot-web`).
const CRAWLER_TOKENS: &[&str] = &[
    // Search engines.
    "Googlebot",
    "AdsBot-Google",
    "Mediapartners-Google",
    "APIs-Google",
    "FeedFetcher-Google",
    "Storebot-Google",
    "Google-InspectionTool",
    "GoogleOther",
    "bingbot",
    "BingPreview",
    "msnbot",
    "adidxbot",
    "Baiduspider",
    "YandexBot",
    "YandexImages",
    "YandexMobileBot",
    "YandexAccessibilityBot",
    "DuckDuckBot",
    "Slurp",
    "Sogou",
    "Exabot",
    "SeznamBot",
    "Qwantify",
    "Qwantbot",
    "Yeti",
    "Daumoa",
    "coccocbot",
    "360Spider",
    "YisouSpider",
    "PetalBot",
    "Applebot",
    "MojeekBot",
    // SEO and link analysis.
    "AhrefsBot",
    "AhrefsSiteAudit",
    "SemrushBot",
    "MJ12bot",
    "DotBot",
    "rogerbot",
    "BLEXBot",
    "DataForSeoBot",
    "serpstatbot",
    "SEOkicks",
    // Link previews.
    "facebookexternalhit",
    "facebookcatalog",
    "Twitterbot",
    "LinkedInBot",
    "Pinterestbot",
    "Slackbot",
    "Discordbot",
    "TelegramBot",
    "WhatsApp",
    "redditbot",
    // Archives, datasets and AI crawlers.
    "ia_archiver",
    "archive.org_bot",
    "CCBot",
    "GPTBot",
    "ChatGPT-User",
    "OAI-SearchBot",
    "ClaudeBot",
    "PerplexityBot",
    "Amazonbot",
    "Bytespider",
    "meta-externalagent",
];

/// Whether `user_agent` names a well-known crawler.
pub fn is_crawler(user_agent: &str) -> bool {
    tokens(user_agent).any(|token| CRAWLER_TOKENS.iter().any(|known| matches(token, known)))
}

/// The words of a user agent: runs of letters, digits, `-`, `_` and `.`, so that
/// `Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)` gives `Mozilla`,
/// `5.0`, `compatible`, `Googlebot`, `2.1`, `http`, `www.google.com`, `bot.html`.
fn tokens(user_agent: &str) -> impl Iterator<Item = &str> {
    user_agent
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .filter(|token| !token.is_empty())
}

fn matches(token: &str, known: &str) -> bool {
    token
        .get(..known.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(known))
        && matches!(token.as_bytes().get(known.len()), None | Some(b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crawlers_are_recognised_by_their_tokens() {
        for user_agent in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot-Image/1.0",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
            "Mozilla/5.0 (compatible; Baiduspider-render/2.0; +http://www.baidu.com/search/spider.html)",
            "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
            "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
            "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
            "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
            "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)",
            "ia_archiver",
            "GOOGLEBOT",
        ] {
            assert!(is_crawler(user_agent), "{user_agent}");
        }
    }

    #[test]
    fn browsers_tools_and_fragments_are_not_crawlers() {
        for user_agent in [
            "",
            "x",
            "Mozilla/5.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/53.0.2767.4 Safari/537.36",
            "curl/8.0",
            "python-requests/2.31",
            "sqlmap/1.7",
            "Google",
            "bot",
            "NotGooglebot/1.0",
            "Googlebotx",
            "Googlebot_fake",
        ] {
            assert!(!is_crawler(user_agent), "{user_agent}");
        }
    }
}
