//! The page `phpinfo()` prints on the simulated host: PHP 7.4 under Apache on Debian, with the
//! host's names, addresses and paths and the settings that make it look exploitable
//! (`allow_url_include`, no `disable_functions`).

use super::host::Host;

/// Stands for the script that called `phpinfo()`, filled in at each call.
pub const SCRIPT_PLACEHOLDER: &str = "\u{0}SCRIPT\u{0}";

fn row(name: &str, value: &str) -> String {
    format!("<tr><td class=\"e\">{name} </td><td class=\"v\">{value} </td></tr>\n")
}

fn directive(name: &str, value: &str) -> String {
    format!(
        "<tr><td class=\"e\">{name}</td><td class=\"v\">{value}</td><td class=\"v\">{value}</td></tr>\n"
    )
}

fn section(title: &str, rows: &str) -> String {
    format!("<h2><a name=\"module_{title}\">{title}</a></h2>\n<table>\n{rows}</table>\n")
}

pub fn page(host: &Host) -> String {
    let version = &host.profile.php_version;
    let root = &host.profile.web_root;
    let system = host.uname();
    let system = system.trim_end_matches(" GNU/Linux");
    let mut out = format!(
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \"DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\"><head>\n\
         <style type=\"text/css\">\nbody {{background-color: #fff; color: #222; font-family: sans-serif;}}\n\
         pre {{margin: 0; font-family: monospace;}}\ntable {{border-collapse: collapse; border: 0; width: 934px; box-shadow: 1px 2px 3px #ccc;}}\n\
         .center {{text-align: center;}}\n.center table {{margin: 1em auto; text-align: left;}}\n\
         td, th {{border: 1px solid #666; font-size: 75%; vertical-align: baseline; padding: 4px 5px;}}\n\
         h1 {{font-size: 150%;}}\nh2 {{font-size: 125%;}}\n.p {{text-align: left;}}\n\
         .e {{background-color: #ccf; width: 300px; font-weight: bold;}}\n.h {{background-color: #99c; font-weight: bold;}}\n\
         .v {{background-color: #ddd; max-width: 300px; overflow-x: auto; word-wrap: break-word;}}\n\
         </style>\n<title>PHP {version} - phpinfo()</title><meta name=\"ROBOTS\" content=\"NOINDEX,NOFOLLOW,NOARCHIVE\" /></head>\n\
         <body><div class=\"center\">\n<table>\n<tr class=\"h\"><td>\n<h1 class=\"p\">PHP Version {version}</h1>\n</td></tr>\n</table>\n<table>\n"
    );
    for (name, value) in [
        ("System", system.to_owned()),
        ("Build Date", "Nov  4 2024 12:25:21".to_owned()),
        ("Server API", "Apache 2.0 Handler".to_owned()),
        ("Virtual Directory Support", "disabled".to_owned()),
        ("Configuration File (php.ini) Path", "/etc/php/7.4/apache2".to_owned()),
        ("Loaded Configuration File", "/etc/php/7.4/apache2/php.ini".to_owned()),
        ("Scan this dir for additional .ini files", "/etc/php/7.4/apache2/conf.d".to_owned()),
        (
            "Additional .ini files parsed",
            "/etc/php/7.4/apache2/conf.d/10-mysqlnd.ini, /etc/php/7.4/apache2/conf.d/10-opcache.ini, \
             /etc/php/7.4/apache2/conf.d/10-pdo.ini, /etc/php/7.4/apache2/conf.d/20-curl.ini, \
             /etc/php/7.4/apache2/conf.d/20-json.ini, /etc/php/7.4/apache2/conf.d/20-mbstring.ini, \
             /etc/php/7.4/apache2/conf.d/20-mysqli.ini, /etc/php/7.4/apache2/conf.d/20-pdo_mysql.ini"
                .to_owned(),
        ),
        ("PHP API", "20190902".to_owned()),
        ("PHP Extension", "20190902".to_owned()),
        ("Zend Extension", "320190902".to_owned()),
        ("Debug Build", "no".to_owned()),
        ("Thread Safety", "disabled".to_owned()),
        ("Zend Signal Handling", "enabled".to_owned()),
        ("Zend Memory Manager", "enabled".to_owned()),
        ("IPv6 Support", "enabled".to_owned()),
        ("Registered PHP Streams", "https, ftps, compress.zlib, php, file, glob, data, http, ftp, phar".to_owned()),
        ("Registered Stream Socket Transports", "tcp, udp, unix, udg, ssl, tls, tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3".to_owned()),
        ("Registered Stream Filters", "zlib.*, string.rot13, string.toupper, string.tolower, string.strip_tags, convert.*, consumed, dechunk, convert.iconv.*".to_owned()),
    ] {
        out.push_str(&row(name, &value));
    }
    out.push_str("</table>\n<hr />\n<h1>Configuration</h1>\n");
    out.push_str(&section(
        "apache2handler",
        &[
            row("Apache Version", &host.profile.server_software),
            row("Apache API Version", "20120211"),
            row(
                "Server Administrator",
                &format!("webmaster@{}", host.profile.domain),
            ),
            row("Hostname:Port", &format!("{}:80", host.fqdn())),
            row(
                "User/Group",
                &format!("{0}({1})/{1}", host.web_user(), host.user.uid),
            ),
            row(
                "Max Requests",
                "Per Child: 0 - Keep Alive: on - Max Per Connection: 100",
            ),
            row("Timeouts", "Connection: 300 - Keep-Alive: 5"),
            row("Server Root", "/etc/apache2"),
            row(
                "Loaded Modules",
                "core mod_so mod_watchdog http_core mod_log_config mod_logio mod_version mod_unixd \
                 mod_access_compat mod_alias mod_auth_basic mod_authn_core mod_authn_file \
                 mod_authz_core mod_authz_host mod_authz_user mod_autoindex mod_deflate mod_dir \
                 mod_env mod_filter mod_mime prefork mod_negotiation mod_php7 mod_reqtimeout \
                 mod_rewrite mod_setenvif mod_status",
            ),
        ]
        .concat(),
    ));
    let mut core = String::from(
        "<tr class=\"h\"><th>Directive</th><th>Local Value</th><th>Master Value</th></tr>\n",
    );
    for (name, value) in [
        ("allow_url_fopen", "On"),
        ("allow_url_include", "On"),
        ("disable_classes", "<i>no value</i>"),
        ("disable_functions", "<i>no value</i>"),
        ("display_errors", "STDOUT"),
        ("document_root", "<i>no value</i>"),
        ("error_reporting", "22527"),
        ("file_uploads", "On"),
        ("html_errors", "Off"),
        ("max_execution_time", "30"),
        ("memory_limit", "128M"),
        ("open_basedir", "<i>no value</i>"),
        ("post_max_size", "8M"),
        ("short_open_tag", "Off"),
        ("upload_max_filesize", "2M"),
        ("upload_tmp_dir", "<i>no value</i>"),
    ] {
        core.push_str(&directive(name, value));
    }
    out.push_str(&section("Core", &core));
    for (module, rows) in [
        (
            "curl",
            row("cURL support", "enabled") + &row("cURL Information", "7.74.0"),
        ),
        ("json", row("json support", "enabled")),
        ("mbstring", row("Multibyte Support", "enabled")),
        (
            "mysqli",
            row("MysqlI Support", "enabled") + &row("Client API library version", "mysqlnd 7.4.33"),
        ),
        (
            "openssl",
            row("OpenSSL support", "enabled")
                + &row("OpenSSL Library Version", "OpenSSL 1.1.1w  11 Sep 2023"),
        ),
        ("pdo_mysql", row("PDO Driver for MySQL", "enabled")),
    ] {
        out.push_str(&section(module, &rows));
    }
    let mut environment = String::from("<tr class=\"h\"><th>Variable</th><th>Value</th></tr>\n");
    for (name, value) in host.environment() {
        environment.push_str(&row(&name, &value));
    }
    out.push_str(&section("Environment", &environment));
    let mut variables = String::from("<tr class=\"h\"><th>Variable</th><th>Value</th></tr>\n");
    for (name, value) in [
        (
            "$_SERVER['SERVER_SOFTWARE']",
            host.profile.server_software.clone(),
        ),
        ("$_SERVER['SERVER_NAME']", host.fqdn()),
        ("$_SERVER['SERVER_ADDR']", host.address.to_string()),
        ("$_SERVER['SERVER_PORT']", "80".into()),
        ("$_SERVER['DOCUMENT_ROOT']", root.clone()),
        (
            "$_SERVER['SERVER_ADMIN']",
            format!("webmaster@{}", host.profile.domain),
        ),
        ("$_SERVER['SCRIPT_FILENAME']", SCRIPT_PLACEHOLDER.into()),
        ("$_SERVER['GATEWAY_INTERFACE']", "CGI/1.1".into()),
        ("$_SERVER['SERVER_PROTOCOL']", "HTTP/1.1".into()),
    ] {
        variables.push_str(&row(name, &value));
    }
    out.push_str(&section("PHP Variables", &variables));
    out.push_str(
        "<hr />\n<h1>PHP License</h1>\n<table>\n<tr class=\"v\"><td>\n<p>\nThis program is free software; \
         you can redistribute it and/or modify it under the terms of the PHP License as published by \
         the PHP Group and included in the distribution in the file:  LICENSE\n</p>\n</td></tr>\n\
         </table>\n</div></body></html>",
    );
    out
}
