//! The template shims' own suite (functions/templates/tests): the node18/node20 and
//! python3-http event/context contracts, checked against the shims directly. The platform side
//! of templates (packaging, dependency installation, calls) is in `deploy`.

use std::path::Path;

#[test]
fn template_shims_pass_their_suite() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/templates/tests/test_shims.py");
    let output = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
