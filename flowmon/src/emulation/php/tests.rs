//! The PHP evaluator's values, strings and functions, against the default host.

use super::{float_text, run_code};
use crate::emulation::with_machine;

fn php(code: &str) -> String {
    with_machine(|machine| run_code(machine, code).unwrap())
}

#[test]
fn values_print_as_php_prints_them() {
    assert_eq!(float_text(0.1 + 0.2), "0.3");
    assert_eq!(float_text(7.0 / 2.0), "3.5");
    assert_eq!(float_text(1e20), "1.0E+20");
    assert_eq!(float_text(-0.000012), "-1.2E-5");
    assert_eq!(
        php("echo 7/2, ' ', 8/2, ' ', 2**63, ' ', PHP_INT_MAX + 1;"),
        "3.5 4 9.2233720368548E+18 9.2233720368548E+18"
    );
    assert_eq!(
        php("echo '5' + '5', '1.5' + 1, true, false, null, 'a' . 1;"),
        "102.51a1"
    );
    assert_eq!(
        php("var_dump('ab', 1, 1.5, true, null, [1, 'x' => 'y']);"),
        "string(2) \"ab\"\nint(1)\nfloat(1.5)\nbool(true)\nNULL\narray(2) {\n  [0]=>\n  int(1)\n  [\"x\"]=>\n  string(1) \"y\"\n}\n"
    );
    assert_eq!(
        php("print_r(explode(',', 'a,b'));"),
        "Array\n(\n    [0] => a\n    [1] => b\n)\n"
    );
}

#[test]
fn strings_interpolate_and_functions_answer() {
    assert_eq!(
        php("$x = 'world'; echo \"hello $x {$x}!\\n\";"),
        "hello world world!\n"
    );
    assert_eq!(
        php("echo strrev('nomwolf'), str_rot13('sybjzba'), strtoupper('x'), ucfirst('abc');"),
        "flowmonflowmonXAbc"
    );
    assert_eq!(
        php("echo chr(65).chr(66), ord('a'), bin2hex('ab'), hex2bin('6869');"),
        "AB976162hi"
    );
    assert_eq!(
        php("echo crc32('flowmon'), ' ', hash('sha256', '');"),
        "4023808637 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        php("echo sprintf('%05d|%s|%x', 42, 'a', 255);"),
        "00042|a|ff"
    );
    assert_eq!(
        php("if (1 == '1') { echo 'loose'; } else { echo 'strict'; } if (1 === '1') echo 'no';"),
        "loose"
    );
    assert_eq!(
        php(
            "$i = 0; while ($i < 3) { echo $i; $i++; } foreach ([4, 5] as $k => $v) echo \"$k$v\";"
        ),
        "0120415"
    );
    assert_eq!(
        php("echo php_uname('s'), ' ', get_current_user(), ' ', getcwd();"),
        "Linux www-data /var/www/html"
    );
    assert_eq!(php("echo `id -u`;"), "33\n");
    assert_eq!(
        php("echo shell_exec('echo hi'), exec('printf \"a\\nb\"');"),
        "hi\nb"
    );
}

#[test]
fn files_go_through_the_simulated_host() {
    assert!(php("echo file_get_contents('/etc/passwd');").starts_with("root:x:0:0:"));
    assert_eq!(
        php(
            "file_put_contents('/tmp/x', 'a'); file_put_contents('/tmp/x', 'b', FILE_APPEND); echo file_get_contents('/tmp/x');"
        ),
        "\nWarning: Use of undefined constant FILE_APPEND - assumed 'FILE_APPEND' (this will throw an Error in a future version of PHP) in Command line code on line 1\nb"
    );
    let denied = php("echo file_get_contents('/etc/shadow');");
    assert_eq!(
        denied,
        "\nWarning: file_get_contents(/etc/shadow): failed to open stream: Permission denied in Command line code on line 1\n"
    );
    assert_eq!(
        php("$f = fopen('/tmp/y', 'w'); fwrite($f, 'dropped'); fclose($f); readfile('/tmp/y');"),
        "dropped"
    );
    assert_eq!(php("include 'wp-config.php'; echo 'ok';"), "ok");
    assert_eq!(
        php("file_put_contents('/tmp/z.php', '<?php echo 2+2; ?>!'); include '/tmp/z.php';"),
        "4!"
    );
}

#[test]
fn errors_read_as_php_prints_them() {
    assert_eq!(
        php("echo 1/0;"),
        "\nFatal error: Uncaught Error: Division by zero in Command line code:1\nStack trace:\n#0 {main}\n  thrown in Command line code on line 1\n"
    );
    assert_eq!(
        php("echo $nope;"),
        "\nNotice: Undefined variable: nope in Command line code on line 1\n"
    );
    assert_eq!(
        php("function f() {}"),
        "\nParse error: syntax error, unexpected 'function' (T_STRING) in Command line code on line 1\n"
    );
    let huge = php("$a = str_repeat('x', 2000000);");
    assert!(
        huge.starts_with("\nFatal error: Allowed memory size of 134217728 bytes exhausted"),
        "{huge}"
    );
}
