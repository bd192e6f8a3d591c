//! Secrets and configs of stack files: declared at the top level (file, environment,
//! content, external, name), used by services in short and long forms.

use super::*;
use crate::store::secret::Kind;

const FILE: &str = r#"
services:
  db:
    image: postgres
    environment:
      POSTGRES_PASSWORD_FILE: /run/secrets/db_pw
    secrets:
      - db_pw
      - source: api_key
        target: key
        uid: "70"
        gid: "71"
        mode: 0400
    configs:
      - source: pg_conf
        target: /etc/pg.conf
      - motd
secrets:
  db_pw:
    file: ./pw.txt
  api_key:
    environment: API_KEY
  shared:
    external: true
    name: cluster_wide
configs:
  pg_conf:
    content: "listen *"
    template_driver: golang
  motd:
    file: motd.txt
"#;

#[test]
fn declared_secrets_are_the_stacks_own_and_services_name_them() {
    let s = load_mem(
        &[
            ("dir/stack.yml", FILE),
            ("dir/pw.txt", "hunter2\n"),
            ("dir/motd.txt", "hello"),
        ],
        "shop",
        &[("API_KEY", "k-123")],
    )
    .unwrap();
    let names: Vec<(Kind, &str, bool)> = s
        .secrets
        .iter()
        .map(|x| (x.kind, x.name.as_str(), x.external))
        .collect();
    assert_eq!(
        names,
        [
            (Kind::Secret, "cluster_wide", true),
            (Kind::Secret, "shop_api_key", false),
            (Kind::Secret, "shop_db_pw", false),
            (Kind::Config, "shop_motd", false),
            (Kind::Config, "shop_pg_conf", false),
        ]
    );
    let pw = s.secrets.iter().find(|x| x.name == "shop_db_pw").unwrap();
    assert_eq!(pw.data.as_ref().unwrap().0, b"hunter2\n");
    assert_eq!(pw.labels.get(STACK_LABEL).map(String::as_str), Some("shop"));
    assert!(
        !format!("{s:?}").contains("hunter2"),
        "Debug shows a secret"
    );
    let key = s.secrets.iter().find(|x| x.name == "shop_api_key").unwrap();
    assert_eq!(key.data.as_ref().unwrap().0, b"k-123");
    let db = svc(&s, "shop_db");
    let sec: Vec<(&str, String, u32, u32, u32)> = db
        .task
        .secrets
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                Kind::Secret.container_path(&r.name, &r.target),
                r.uid,
                r.gid,
                r.mode,
            )
        })
        .collect();
    assert_eq!(
        sec,
        [
            ("shop_db_pw", "/run/secrets/db_pw".to_string(), 0, 0, 0o444),
            (
                "shop_api_key",
                "/run/secrets/key".to_string(),
                70,
                71,
                0o400
            ),
        ]
    );
    let conf: Vec<String> = db
        .task
        .configs
        .iter()
        .map(|r| Kind::Config.container_path(&r.name, &r.target))
        .collect();
    assert_eq!(conf, ["/etc/pg.conf", "/motd"]);
    assert!(
        s.warnings.iter().any(|w| w.contains("template_driver")),
        "{:?}",
        s.warnings
    );
    assert!(
        !s.warnings.iter().any(|w| w.contains("secrets")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn an_undeclared_secret_a_missing_content_and_an_unset_variable_are_refused() {
    let undeclared = "services:\n  a:\n    image: x\n    secrets: [nope]\n";
    let e = one(undeclared).unwrap_err().to_string();
    assert!(
        e.contains("services.a.secrets: secret nope is not declared under the top-level secrets:"),
        "{e}"
    );
    let empty = "services:\n  a:\n    image: x\nsecrets:\n  pw: {}\n";
    let e = one(empty).unwrap_err().to_string();
    assert!(e.contains("secrets.pw: one of file:"), "{e}");
    let unset = "services:\n  a:\n    image: x\nsecrets:\n  pw:\n    environment: NOPE_PW\n";
    let e = one(unset).unwrap_err().to_string();
    assert!(e.contains("the variable NOPE_PW is not set"), "{e}");
    let missing = "services:\n  a:\n    image: x\nsecrets:\n  pw:\n    file: ./absent\n";
    let e = one(missing).unwrap_err().to_string();
    assert!(e.contains("secrets.pw.file: cannot read"), "{e}");
}
