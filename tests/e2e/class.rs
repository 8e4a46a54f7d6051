//! A class on the local engine (`up --local --seats N` / `--roster`): every seat its own
//! Jupyter, token and workspace; the instructor's verbs (token, distribute, collect, down)
//! checked through Jupyter's own REST API, as a student's browser would reach each seat.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::*;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into()
}

/// Status and body of a GET with a token.
fn get(url: &str, token: &str) -> (u16, String) {
    match agent()
        .get(url)
        .header("Authorization", &format!("token {token}"))
        .call()
    {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// A seat: its base URL and token, from a roster row.
struct Seat {
    base: String,
    token: String,
}

impl Seat {
    fn of(row: &Value) -> Seat {
        let url = row["url"].as_str().expect("a ready seat has a URL");
        Seat {
            base: url.split("/lab").next().expect("base").to_string(),
            token: row["token"].as_str().expect("token").to_string(),
        }
    }

    fn put_text(&self, path: &str, content: &str) {
        let r = agent()
            .put(&format!("{}/api/contents/{path}", self.base))
            .header("Authorization", &format!("token {}", self.token))
            .send_json(serde_json::json!({"type": "file", "format": "text", "content": content}))
            .expect("PUT contents");
        assert!(matches!(r.status().as_u16(), 200 | 201), "PUT {path}");
    }

    fn read_text(&self, path: &str) -> Option<String> {
        let (code, body) = get(
            &format!("{}/api/contents/{path}?type=file&format=text", self.base),
            &self.token,
        );
        (code == 200).then(|| {
            let v: Value = serde_json::from_str(&body).expect("contents JSON");
            v["content"].as_str().expect("text").to_string()
        })
    }
}

/// Everything of the class's, whatever the test did.
struct ClassCleanup(String);
impl Drop for ClassCleanup {
    fn drop(&mut self) {
        let label = format!("label=dev.labship.class={}", self.0);
        let ids = docker_ok(&["ps", "-aq", "--filter", &label]);
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        let vols = docker_ok(&["volume", "ls", "-q", "--filter", &label]);
        for v in vols.split_whitespace() {
            let _ = docker(&["volume", "rm", v]);
        }
    }
}

fn labelled(kind: &str, class: &str) -> Vec<String> {
    let label = format!("label=dev.labship.class={class}");
    let out = match kind {
        "container" => docker_ok(&["ps", "-a", "--format", "{{.Names}}", "--filter", &label]),
        _ => docker_ok(&["volume", "ls", "-q", "--filter", &label]),
    };
    let mut all: Vec<String> = out.split_whitespace().map(String::from).collect();
    all.sort();
    all
}

fn rows_by_seat(report: &Value) -> BTreeMap<String, Value> {
    report["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|r| (r["seat"].as_str().expect("seat").to_string(), r.clone()))
        .collect()
}

#[test]
fn a_local_class_of_four_seats_is_handed_out_collected_and_ended() {
    let p = Project::default_workload("class");
    let class = p.name.clone();
    let _cleanup = ClassCleanup(class.clone());
    // Seat 3 cannot start: a container that is not labship's holds its name.
    let squatter = format!("labship-{class}-3");
    docker_ok(&["create", "--name", &squatter, &rig().base_image, "true"]);
    let failed = p.labship(&["up", "--local", "--seats", "4", "-o", "json"]);
    assert!(!failed.status.success(), "a failed seat fails the command");
    let err = stderr(&failed);
    assert!(
        err.contains("1 of the 4 seats") && err.contains(": 3"),
        "{err}"
    );
    // One JSON document, the roster, which says what failed.
    let report: Value = serde_json::from_slice(&failed.stdout).expect("the roster as JSON");
    assert_eq!(
        (report["ready"].as_u64(), report["failed"].as_u64()),
        (Some(3), Some(1))
    );
    let rows = rows_by_seat(&report);
    assert_eq!(rows["3"]["state"], "failed");
    assert!(
        rows["3"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("already in use")),
        "{}",
        rows["3"]
    );
    // Nothing half-made for the failed seat: no volume of its own.
    assert!(!labelled("volume", &class).contains(&format!("labship-{class}-3-work")));
    docker_ok(&["rm", "-f", &squatter]);

    // Again: the three seats are left as they are, seat 3 comes up; the roster as CSV.
    let again = p.labship(&["up", "--local", "--seats", "4", "-o", "csv"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let csv = String::from_utf8_lossy(&again.stdout).to_string();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("seat,student,email,url,token,state,error")
    );
    assert_eq!(lines.clone().count(), 4, "{csv}");
    let roster = json(&p.labship(&["token", "--local", "-o", "json"]));
    let rows = rows_by_seat(&roster);
    assert_eq!(rows.len(), 4, "{roster}");
    for line in lines {
        let seat = line.split(',').next().expect("seat");
        assert!(
            line.contains(rows[seat]["url"].as_str().expect("url")),
            "{line}"
        );
    }
    let seats: BTreeMap<String, Seat> =
        rows.iter().map(|(k, v)| (k.clone(), Seat::of(v))).collect();

    // Every seat answers with its own token, and only with it.
    let mut bases: Vec<&str> = seats.values().map(|s| s.base.as_str()).collect();
    bases.dedup();
    assert_eq!(bases.len(), 4, "one URL per seat");
    for s in seats.values() {
        assert_eq!(get(&format!("{}/api/status", s.base), &s.token).0, 200);
    }
    assert_eq!(
        get(
            &format!("{}/api/contents", seats["2"].base),
            &seats["1"].token
        )
        .0,
        403,
        "seat 1's token must not open seat 2"
    );
    // `token --seat` prints one seat's.
    let one = json(&p.labship(&["token", "--local", "--seat", "2", "-o", "json"]));
    assert_eq!(one["token"].as_str(), Some(seats["2"].token.as_str()));
    // The clean first screen: JupyterLab's own settings say it fetches no news and asks
    // nobody.
    let (code, body) = get(
        &format!(
            "{}/lab/api/settings/@jupyterlab/apputils-extension:notification",
            seats["1"].base
        ),
        &seats["1"].token,
    );
    assert_eq!(code, 200, "{body}");
    let settings: Value = serde_json::from_str(&body).expect("settings JSON");
    // The override becomes the setting's default ("none" would ask each student).
    assert_eq!(
        settings["schema"]["properties"]["fetchNews"]["default"], "false",
        "{settings}"
    );
    // Each seat has its limits.
    let memory = docker_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        &format!("labship-{class}-1"),
    ]);
    assert_eq!(memory.trim(), format!("{} 1000000000", 2048u64 << 20));
    // status lists the seats with their class.
    let status = json(&p.labship(&["status", "--local", "-o", "json"]));
    let in_class = status["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .filter(|d| d["seat"]["class"] == class.as_str())
        .count();
    assert_eq!(in_class, 4, "{status}");

    // distribute: a file and a folder to every seat; seat 2's student has her own hello.py.
    seats["2"].put_text("hello.py", "print('mine')\n");
    // status: each seat's last activity, from its own Jupyter; the save just now is seat 2's.
    let status = json(&p.labship(&["status", "--local", "-o", "json"]));
    let activity: BTreeMap<String, (String, i64)> = status["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .filter(|d| d["seat"]["class"] == class.as_str())
        .map(|d| {
            (
                d["seat"]["seat"].as_str().expect("seat").to_string(),
                (
                    d["last_activity"]
                        .as_str()
                        .expect("last_activity")
                        .to_string(),
                    d["idle_seconds"].as_i64().expect("idle_seconds"),
                ),
            )
        })
        .collect();
    assert_eq!(activity.len(), 4, "{status}");
    let newest = activity.values().map(|(t, _)| t).max().expect("times");
    assert_eq!(&activity["2"].0, newest, "{activity:?}");
    assert!(activity["2"].1 < 120, "idle since the save: {activity:?}");
    p.write("handout/hello.py", "print('from the instructor')\n");
    p.write("handout/week2/data/points.csv", "x,y\n1,2\n");
    let given = json(&p.labship(&[
        "distribute",
        "--local",
        "handout/hello.py",
        "handout/week2",
        "-o",
        "json",
    ]));
    assert_eq!(given["failed"], 0, "{given}");
    let by_seat = rows_by_seat(&given);
    assert_eq!(
        by_seat["2"]["kept"],
        serde_json::json!(["hello.py"]),
        "{given}"
    );
    assert_eq!(by_seat["1"]["kept"], serde_json::json!([]), "{given}");
    for (id, s) in &seats {
        let expected = if id == "2" {
            "print('mine')\n"
        } else {
            "print('from the instructor')\n"
        };
        assert_eq!(
            s.read_text("hello.py").as_deref(),
            Some(expected),
            "seat {id}"
        );
        assert_eq!(
            s.read_text("week2/data/points.csv").as_deref(),
            Some("x,y\n1,2\n"),
            "seat {id}"
        );
    }

    // collect: the notebook each seat wrote, byte for byte, into collected/<seat>/.
    for (id, s) in &seats {
        s.put_text(
            "answers.ipynb",
            &format!("{{\"cells\": [], \"seat\": \"{id}\", \"é\": \"ü\"}}\n"),
        );
    }
    let collected = json(&p.labship(&["collect", "--local", "-o", "json"]));
    assert_eq!(collected["failed"], 0, "{collected}");
    for id in seats.keys() {
        let got = std::fs::read_to_string(p.path().join(format!("collected/{id}/answers.ipynb")))
            .expect("collected notebook");
        assert_eq!(
            got,
            format!("{{\"cells\": [], \"seat\": \"{id}\", \"é\": \"ü\"}}\n")
        );
        assert!(p.path().join(format!("collected/{id}/mtcars.csv")).exists());
    }
    // Only some paths, of one seat.
    let dest = p.path().join("only");
    let one = json(&p.labship(&[
        "collect",
        "--local",
        "--seat",
        "4",
        "--to",
        dest.to_str().expect("utf-8"),
        "answers.ipynb",
        "-o",
        "json",
    ]));
    assert_eq!(one["files"], 1, "{one}");
    assert!(dest.join("4/answers.ipynb").exists() && !dest.join("4/mtcars.csv").exists());

    // down --seat: that seat only (its workspace kept), the others still answer.
    let down_one = p.labship(&["down", "--local", "--seat", "1", "-o", "json"]);
    assert!(down_one.status.success(), "{}", stderr(&down_one));
    let containers = labelled("container", &class);
    assert!(
        !containers.contains(&format!("labship-{class}-1")),
        "{containers:?}"
    );
    assert_eq!(containers.len(), 3, "{containers:?}");
    assert!(labelled("volume", &class).contains(&format!("labship-{class}-1-work")));
    // `status` names the seat whose workspace is kept by its class: the class's `up` brings
    // it back as a seat, `down --seat` deletes it.
    let status = json(&p.labship(&["status", "--local", "-o", "json"]));
    let kept = status["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|r| r["name"] == format!("{class}-1")))
        .cloned()
        .unwrap_or_default();
    assert_eq!(kept["state"], "down", "{status}");
    let note = kept["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!(
            "the class's `labship up {class} --local` run again"
        )) && note.contains(&format!(
            "`labship down {class} --seat 1 --local --delete-data`"
        )),
        "{note}"
    );
    assert_eq!(
        get(
            &format!("{}/api/status", seats["2"].base),
            &seats["2"].token
        )
        .0,
        200
    );
    // One seat's log, by the class and the seat.
    let log = json(&p.labship(&["logs", "--local", "--seat", "2", "-o", "json"]));
    assert_eq!(log["deployment"], format!("{class}-2"), "{log}");
    assert!(
        log["log"].as_str().unwrap_or_default().contains("Jupyter"),
        "{log}"
    );
    let none = p.labship(&["logs", "--local", "--seat", "9"]);
    assert!(
        !none.status.success() && stderr(&none).contains("no seat `9`"),
        "{}",
        stderr(&none)
    );
    // A seat that is not in the class.
    let none = p.labship(&["token", "--local", "--seat", "9"]);
    assert!(
        !none.status.success() && stderr(&none).contains("no seat `9`"),
        "{}",
        stderr(&none)
    );

    // down of the class with its data: nothing of it left.
    let down = p.labship(&["down", "--local", "--delete-data", "--yes", "-o", "json"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(labelled("container", &class), Vec::<String>::new());
    assert_eq!(labelled("volume", &class), Vec::<String>::new());
}

#[test]
fn a_roster_names_the_seats_and_a_bad_one_creates_nothing() {
    let p = Project::default_workload("roster");
    let class = p.name.clone();
    let _cleanup = ClassCleanup(class.clone());
    for (body, expected) in [
        (
            "id,name\nann,Ann\nann,Ann again\n",
            "line 3: seat id `ann` is also on line 2",
        ),
        ("id,name\nAnn Lee,Ann\n", "try `ann-lee`"),
        ("name,email\nAnn,a@x\n", "no `id` column"),
        ("id,name\n\"ann,Ann\n", "roster.csv"),
    ] {
        p.write("roster.csv", body);
        let out = p.labship(&["up", "--local", "--roster", "roster.csv"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
    assert_eq!(labelled("container", &class), Vec::<String>::new());
    // A spreadsheet's export: byte-order mark, CRLF, quotes, extra columns.
    p.write(
        "roster.csv",
        "\u{feff}ID,Name,Email,Section\r\nann-lee,\"Lee, Ann\",ann@example.org,A\r\n42,\"Bo \"\"B\"\" Chen\",,B\r\n",
    );
    let up = json(&p.labship(&["up", "--local", "--roster", "roster.csv", "-o", "json"]));
    let rows = rows_by_seat(&up);
    assert_eq!(rows["ann-lee"]["student"], "Lee, Ann");
    assert_eq!(rows["ann-lee"]["email"], "ann@example.org");
    assert_eq!(rows["42"]["student"], "Bo \"B\" Chen");
    for row in rows.values() {
        let s = Seat::of(row);
        assert_eq!(get(&format!("{}/api/status", s.base), &s.token).0, 200);
    }
    assert_eq!(
        labelled("container", &class),
        vec![
            format!("labship-{class}-42"),
            format!("labship-{class}-ann-lee")
        ]
    );
    // The roster again, as the instructor's table.
    let table = p.labship(&["token", "--local"]);
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        text.contains("Lee, Ann") && text.contains("2 of 2 seats ready"),
        "{text}"
    );
    let down = p.labship(&["down", "--local", "--delete-data", "--yes"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(labelled("volume", &class), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ec2_class_gives_each_seat_its_instance_and_ends_with_nothing_left() {
    let sim = sim_endpoint();
    let rig = rig();
    let p = Project::default_workload("ecls");
    let class = p.name.clone();
    // Three seats: one is taken down alone, then the two left together. All on one port.
    let port = free_port();
    let port_s = port.to_string();
    let mut args = ec2_up_args(&port_s);
    args.extend(["--seats", "3"]);
    // A fault scope counts the calls signed with its key (the hosts sign with another); its
    // one rule, a delay of 0, only records each DescribeInstances that names two instances or
    // more.
    let counted = Faults::new(&sim, "class-calls");
    counted.set(
        0,
        serde_json::json!([
            {"action": "ec2:DescribeInstances", "param": {"InstanceId.2": "*"}, "delay": 0}
        ]),
    );
    let report = json(&p.labship_at(&sim, &args, &[("AWS_ACCESS_KEY_ID", counted.key.as_str())]));
    let calls = |action: &str| counted.report()["calls"][action].as_u64().unwrap_or(0);
    assert_eq!(report["ready"], 3, "{report}");
    // What is the same for every seat is asked once for the class, and the seats' instances
    // are launched by one RunInstances (each then gets its own tags).
    for once in [
        "sts:GetCallerIdentity",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeImages",
        "ec2:DescribeVpcs",
        "ecr:GetAuthorizationToken",
    ] {
        assert_eq!(calls(once), 1, "{once}");
    }
    assert_eq!(calls("iam:GetInstanceProfile"), 1);
    // Found (two reads: it exists, its ARN), or made: no more, whatever the seats.
    assert!(calls("ecr:DescribeRepositories") <= 2);
    assert_eq!(calls("ec2:RunInstances"), 1);
    assert_eq!(calls("ec2:CreateTags"), 3);
    // One security group for the class, made by the first seat with its rule; the others
    // wait for it and take it.
    assert_eq!(calls("ec2:CreateSecurityGroup"), 1);
    assert_eq!(calls("ec2:AuthorizeSecurityGroupIngress"), 1);
    // The seats' waits read their instances together (aws::rounds): a DescribeInstances
    // named several.
    let shared = counted.report()["fired"].as_array().map_or(0, |f| {
        f.iter()
            .filter(|x| x["action"] == "ec2:DescribeInstances")
            .count()
    });
    assert!(shared >= 1, "{}", counted.report());
    let rows = rows_by_seat(&report);
    // Each seat: its own instance, so its own address, all on the class's one port; its own
    // token, its own certificate.
    let mut at = BTreeMap::new();
    for id in ["1", "2", "3"] {
        let (origin, _, _) = seat_answers(&rows[id], id, port);
        at.insert(id, origin);
    }
    let addresses: std::collections::BTreeSet<&String> = at.values().collect();
    assert_eq!(addresses.len(), 3, "a seat's address is its own: {at:?}");
    let other = rows["1"]["token"].as_str().expect("token");
    let pin2 = rows["2"]["tls_fingerprint"].as_str().expect("pin");
    assert_eq!(
        crate::ec2::jupyter_status(&at["2"], pin2, Some(other)),
        403,
        "seat 1's token must not open seat 2"
    );
    // Tagged with the class and the seat, as AWS shows them.
    let instances = class_instances(&rig.aws_endpoint, &class);
    let mut seats_tagged: Vec<String> = instances
        .iter()
        .map(|i| {
            i["Tags"]
                .as_array()
                .expect("tags")
                .iter()
                .find(|t| t["Key"] == "labship:seat")
                .and_then(|t| t["Value"].as_str())
                .expect("a seat tag")
                .to_string()
        })
        .collect();
    seats_tagged.sort();
    assert_eq!(seats_tagged, ["1", "2", "3"], "{instances:?}");
    // Every seat's instance is in the class's one group, which names its class (and no
    // deployment) and holds one rule: the class's port.
    let group = class_group(&rig.aws_endpoint, &class).expect("the class's security group");
    let group_id = group["GroupId"].as_str().expect("group id").to_string();
    for i in &instances {
        let groups: Vec<&str> = i["SecurityGroups"]
            .as_array()
            .expect("groups")
            .iter()
            .filter_map(|g| g["GroupId"].as_str())
            .collect();
        assert_eq!(groups, [group_id.as_str()], "{i}");
    }
    let tag = |key: &str| {
        group["Tags"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["Key"] == key))
            .map(|t| t["Value"].clone())
    };
    assert_eq!(
        tag("labship:class"),
        Some(Value::from(class.as_str())),
        "{group}"
    );
    assert_eq!(tag("labship:deployment"), None, "{group}");
    let rules = group["IpPermissions"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{group}");
    assert_eq!(rules[0]["FromPort"], port, "{group}");

    // A seat added later without `--port` joins the class on its port (the rules of the
    // group the seats share are for it), not on ec2.port; the others stay as they are. It is
    // taken down again at once.
    let mut more: Vec<&str> = ec2_up_args(&port_s)
        .into_iter()
        .filter(|a| *a != "--port" && *a != port_s.as_str())
        .collect();
    more.extend(["--seats", "4"]);
    let grown = json(&p.labship_at(&sim, &more, &[]));
    assert_eq!(grown["ready"], 4, "{grown}");
    let grown_rows = rows_by_seat(&grown);
    for id in ["1", "2", "3"] {
        assert_eq!(grown_rows[id]["url"], rows[id]["url"], "{grown}");
    }
    let url4 = grown_rows["4"]["url"].as_str().expect("url");
    let origin4 = crate::ec2::origin_of(url4);
    assert!(
        url4.starts_with(&format!(
            "{}/lab?token=",
            crate::ec2::on_port(&origin4, port)
        )),
        "{url4}"
    );
    assert_eq!(
        crate::ec2::jupyter_status(
            &origin4,
            grown_rows["4"]["tls_fingerprint"].as_str().expect("pin"),
            grown_rows["4"]["token"].as_str()
        ),
        200
    );
    let group_now = class_group(&rig.aws_endpoint, &class).expect("the class's group");
    assert_eq!(group_now["GroupId"], group["GroupId"]);
    assert_eq!(group_now["IpPermissions"], group["IpPermissions"]);
    json(&p.labship_at(&sim, &ec2_down_args(&["--seat", "4", "--delete-data"]), &[]));
    crate::ec2::assert_nothing_left(&format!("{class}-4")).await;

    // `--port` on the running class moves every seat there (same token, same certificate);
    // once all have moved, the group keeps the new port's rule only.
    let port2 = free_port();
    let port2_s = port2.to_string();
    let mut moving = ec2_up_args(&port2_s);
    moving.extend(["--seats", "3"]);
    let moved = json(&p.labship_at(&sim, &moving, &[]));
    assert_eq!(moved["ready"], 3, "{moved}");
    let moved_rows = rows_by_seat(&moved);
    for id in ["1", "2", "3"] {
        let url = moved_rows[id]["url"].as_str().expect("url");
        let origin = crate::ec2::origin_of(url);
        assert!(
            url.starts_with(&format!(
                "{}/lab?token=",
                crate::ec2::on_port(&origin, port2)
            )),
            "{url}"
        );
        assert_eq!(moved_rows[id]["token"], rows[id]["token"], "{moved}");
        let pin = rows[id]["tls_fingerprint"].as_str().expect("pin");
        assert_eq!(
            crate::ec2::jupyter_status(&origin, pin, rows[id]["token"].as_str()),
            200,
            "seat {id} on its new port"
        );
        at.insert(id, origin);
    }
    let group_now = class_group(&rig.aws_endpoint, &class).expect("the class's group");
    let rules = group_now["IpPermissions"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{group_now}");
    assert_eq!(rules[0]["FromPort"], port2, "{group_now}");

    // Another identity of the account does not join the class (its rules would open to its
    // addresses): a fourth seat is refused before its token is made, and the group is as
    // it was.
    let (key, secret) = limited_user(
        &rig.aws_endpoint,
        &format!("{class}-other"),
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    );
    let someone_else = [
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let mut joining = ec2_up_args(&port2_s);
    joining.extend(["--seats", "4"]);
    let refused = p.labship_at(&sim, &joining, &someone_else);
    assert!(!refused.status.success(), "{}", stderr(&refused));
    let roster: Value = serde_json::from_slice(&refused.stdout).expect("the roster as JSON");
    let error4 = rows_by_seat(&roster)["4"]["error"].to_string();
    assert!(error4.contains("belongs to"), "{roster}");
    let token4 = aws_cli(
        &rig.aws_endpoint,
        &[
            "ssm",
            "get-parameter",
            "--name",
            &format!("/labship/{class}-4/token"),
        ],
    );
    assert!(!token4.status.success(), "seat 4's token was made");
    assert_eq!(class_instances(&rig.aws_endpoint, &class).len(), 3);
    assert_eq!(
        class_group(&rig.aws_endpoint, &class).map(|g| g["IpPermissions"].clone()),
        Some(group_now["IpPermissions"].clone())
    );

    // distribute and collect through each seat's own Jupyter (pinned TLS).
    hand_out_and_collect(&p, &sim, &["1", "2", "3"]);
    // token of the class: the roster again, from AWS alone.
    // The names and emails EC2 does not keep come from the roster file.
    p.write(
        "names.csv",
        "id,name,email\n2,\"Lee, Ann\",ann@example.org\n",
    );
    let roster = json(&p.labship_at(
        &sim,
        &["token", "--ec2", "--roster", "names.csv", "-o", "json"],
        &[],
    ));
    assert_eq!(
        rows_by_seat(&roster)["2"]["student"],
        "Lee, Ann",
        "{roster}"
    );
    assert_eq!(rows_by_seat(&roster)["2"]["email"], "ann@example.org");
    assert_eq!(rows_by_seat(&roster)["1"]["student"], Value::Null);
    assert_eq!(
        rows_by_seat(&roster)["2"]["token"],
        rows["2"]["token"],
        "{roster}"
    );

    // A seat's token rotated alone: the new one opens seat 2, the old one no longer does,
    // and seat 1 keeps its own.
    let rotated = json(&p.labship_at(
        &sim,
        &["token", "--ec2", "--rotate", "--seat", "2", "-o", "json"],
        &[],
    ));
    let new = rotated["token"].as_str().expect("new token");
    let old = rows["2"]["token"].as_str().expect("old token");
    assert_ne!(new, old);
    assert_eq!(crate::ec2::jupyter_status(&at["2"], pin2, Some(new)), 200);
    assert_eq!(crate::ec2::jupyter_status(&at["2"], pin2, Some(old)), 403);
    let pin1 = rows["1"]["tls_fingerprint"].as_str().expect("pin");
    assert_eq!(crate::ec2::jupyter_status(&at["1"], pin1, Some(other)), 200);

    // down --seat 1: that seat's instance only; the class's group stays for the others (its
    // confirmation does not offer to delete it, its report says why it is kept).
    let asked = p.labship_at(&sim, &["down", "--ec2", "--seat", "1"], &[]);
    assert!(!asked.status.success());
    let question = unwrapped(&stderr(&asked));
    assert!(question.contains(&format!("of `{class}-1`")), "{question}");
    assert!(!question.contains(&group_id), "{question}");
    let one = json(&p.labship_at(&sim, &ec2_down_args(&["--seat", "1", "--delete-data"]), &[]));
    crate::ec2::assert_nothing_left(&format!("{class}-1")).await;
    assert!(
        one["kept"].to_string().contains(&group_id),
        "the class's group is kept: {one}"
    );
    assert_eq!(
        class_group(&rig.aws_endpoint, &class).map(|g| g["GroupId"].clone()),
        Some(Value::from(group_id.as_str()))
    );
    assert_eq!(crate::ec2::jupyter_status(&at["2"], pin2, Some(new)), 200);
    // down of the class, with AWS refusing: seat 3's data volume (HTTP 500 on every attempt),
    // the TerminateInstances that names both seats' instances (seat 3's second), and every
    // DeleteParameters. The seats are taken down together — one listing of each kind, one
    // ListRoles — and what AWS refuses for both is asked again for each alone, so seat 3's
    // failure is its own: seat 2 is gone entirely, seat 3 keeps what follows its volume, and
    // the command prints the report and fails naming seat 3.
    let volume_of = |seat: &str| {
        let found = aws_json(
            &rig.aws_endpoint,
            &[
                "ec2",
                "describe-volumes",
                "--filters",
                &format!("Name=tag:labship:deployment,Values={class}-{seat}"),
                "Name=tag:labship:volume,Values=workspace",
            ],
        );
        found["Volumes"][0]["VolumeId"].as_str().map(str::to_string)
    };
    let refused = volume_of("3").expect("seat 3's data volume");
    let seat3 = class_instances(&rig.aws_endpoint, &class)
        .into_iter()
        .find(|i| {
            i["Tags"].as_array().is_some_and(|tags| {
                tags.iter()
                    .any(|t| t["Key"] == "labship:seat" && t["Value"] == "3")
            })
        })
        .and_then(|i| i["InstanceId"].as_str().map(str::to_string))
        .expect("seat 3's instance");
    let counted = Faults::new(&sim, "class-down-calls");
    counted.set(
        0,
        serde_json::json!([
            {"action": "ec2:DeleteVolume", "param": {"VolumeId": refused}, "fault": "5xx"},
            {"action": "ec2:TerminateInstances", "param": {"InstanceId.2": seat3}, "fault": "5xx"},
            {"action": "ssm:DeleteParameters", "fault": "5xx"}
        ]),
    );
    let failed = p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data"]),
        &[("AWS_ACCESS_KEY_ID", counted.key.as_str())],
    );
    assert!(!failed.status.success(), "{}", stderr(&failed));
    assert!(
        unwrapped(&stderr(&failed)).contains(&format!(
            "1 of the 2 seats of `{class}` are not all removed: 3"
        )),
        "{}",
        stderr(&failed)
    );
    let report: Value = serde_json::from_slice(&failed.stdout).expect("the report on stdout");
    let failures = report["failures"].to_string();
    assert!(failures.contains(&format!("`{class}-3`")), "{report}");
    assert!(!failures.contains(&format!("`{class}-2`")), "{report}");
    assert!(
        report["terminated"].to_string().contains(&seat3),
        "{report}"
    );
    let all = counted.report();
    let calls = |action: &str| all["calls"][action].as_u64().unwrap_or(0);
    let fired = |action: &str| {
        all["fired"]
            .as_array()
            .map_or(0, |f| f.iter().filter(|x| x["action"] == action).count()) as u64
    };
    // The call for both, refused on each of the SDK's attempts, then one for each seat alone.
    assert!(fired("ec2:TerminateInstances") >= 1, "{all}");
    assert_eq!(
        calls("ec2:TerminateInstances") - fired("ec2:TerminateInstances"),
        2,
        "{all}"
    );
    // Seat 2's token (seat 3's stays with its volume): asked for in one DeleteParameters,
    // refused, then deleted alone.
    assert_eq!(
        calls("ssm:DeleteParameters"),
        fired("ssm:DeleteParameters"),
        "{all}"
    );
    assert!(calls("ssm:DeleteParameters") >= 1, "{all}");
    assert_eq!(calls("ssm:DeleteParameter"), 1, "{all}");
    assert_eq!(calls("iam:ListRoles"), 1, "{all}");
    // Listed for the class's seats (`Host::listing`, which reads no console), then by
    // `down`: the seats' own groups (none: they share the class's), again once the instances
    // are gone, and the class's group, deleted as no seat's instance is left (seat 3's
    // volume is not in its way).
    assert_eq!(calls("ec2:GetConsoleOutput"), 0, "{all}");
    assert_eq!(calls("ec2:DescribeSecurityGroups"), 4, "{all}");
    assert_eq!(calls("ec2:DeleteSecurityGroup"), 1, "{all}");
    assert!(
        report["security_groups_deleted"]
            .to_string()
            .contains(&group_id),
        "{report}"
    );
    assert!(class_group(&rig.aws_endpoint, &class).is_none());
    crate::ec2::assert_nothing_left(&format!("{class}-2")).await;
    assert!(class_instances(&rig.aws_endpoint, &class).is_empty());
    assert_eq!(volume_of("3"), Some(refused.clone()));
    let token_left = aws_cli(
        &rig.aws_endpoint,
        &[
            "ssm",
            "get-parameter",
            "--name",
            &format!("/labship/{class}-3/token"),
        ],
    );
    assert!(
        token_left.status.success(),
        "seat 3's token went before its volume"
    );
    // The volume deleted by hand (in the console, say): seat 3's token, which names its
    // class and seat in its tags, is all that is left of it. `status` lists it as the
    // seat's, so the next down of the class finds and removes it; nothing of the class is
    // left.
    let deleted = aws_cli(
        &rig.aws_endpoint,
        &["ec2", "delete-volume", "--volume-id", refused.as_str()],
    );
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let status = json(&p.labship_at(&sim, &["status", "--ec2", "-o", "json"], &[]));
    let left = status["deployments"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == format!("{class}-3")))
        .unwrap_or_else(|| panic!("seat 3's token is not listed: {status}"));
    assert_eq!(left["state"], "token left", "{left}");
    assert_eq!(left["seat"]["class"], class.as_str(), "{left}");
    assert_eq!(left["seat"]["seat"], "3", "{left}");
    json(&p.labship_at(&sim, &ec2_down_args(&["--delete-data"]), &[]));
    crate::ec2::assert_nothing_left(&format!("{class}-3")).await;

    // A class's group with no seat left (made by hand here, as an interrupted `down` would
    // leave it): `status` lists it by the class's name, `down` of that name asks to delete
    // it, and deletes it.
    let vpc = group["VpcId"].as_str().expect("vpc");
    let made = aws_json(
        &rig.aws_endpoint,
        &[
            "ec2",
            "create-security-group",
            "--group-name",
            &format!("labship-class.{class}"),
            "--description",
            "left alone",
            "--vpc-id",
            vpc,
            "--tag-specifications",
            &format!(
                "ResourceType=security-group,Tags=[{{Key=labship:managed-by,Value=labship}},{{Key=labship:class,Value={class}}}]"
            ),
        ],
    );
    let lone = made["GroupId"].as_str().expect("group id").to_string();
    let status = json(&p.labship_at(&sim, &["status", "--ec2", "-o", "json"], &[]));
    let row = status["deployments"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == class.as_str()))
        .unwrap_or_else(|| panic!("the class's lone group is not listed: {status}"));
    assert_eq!(row["state"], "group left", "{row}");
    assert!(row["note"].to_string().contains(&lone), "{row}");
    let asked = p.labship_at(&sim, &["down", "--ec2"], &[]);
    assert!(!asked.status.success());
    let question = unwrapped(&stderr(&asked));
    assert!(
        question.contains(&format!("delete security group {lone} of class")),
        "{question}"
    );
    let gone = json(&p.labship_at(&sim, &ec2_down_args(&[]), &[]));
    assert!(
        gone["security_groups_deleted"].to_string().contains(&lone),
        "{gone}"
    );
    assert!(class_group(&rig.aws_endpoint, &class).is_none());
}

/// An EC2 seat's roster row: its login URL is on `port` of its instance's address, and its
/// Jupyter answers its own token over TLS pinned to its fingerprint. (origin, pin, token).
fn seat_answers(row: &Value, id: &str, port: u16) -> (String, String, String) {
    let url = row["url"].as_str().expect("url");
    let origin = crate::ec2::origin_of(url);
    assert!(
        url.starts_with(&format!(
            "{}/lab?token=",
            crate::ec2::on_port(&origin, port)
        )),
        "seat {id} on port {port}: {row}"
    );
    let pin = row["tls_fingerprint"].as_str().expect("pin");
    let token = row["token"].as_str().expect("token");
    assert_eq!(
        crate::ec2::jupyter_status(&origin, pin, Some(token)),
        200,
        "seat {id}"
    );
    (origin, pin.to_string(), token.to_string())
}

/// handout/week1.md given to every seat of the EC2 class (`distribute`), then collected
/// ([`assert_collected`]).
fn hand_out_and_collect(p: &Project, sim: &str, ids: &[&str]) {
    p.write("handout/week1.md", "# Week 1\n");
    let given = json(&p.labship_at(
        sim,
        &["distribute", "--ec2", "handout/week1.md", "-o", "json"],
        &[],
    ));
    assert_eq!(given["failed"], 0, "{given}");
    assert_collected(p, sim, ids);
}

/// `collect --ec2 week1.md` brings back the seats `ids`' week1.md (and no other), byte for
/// byte, each through its own Jupyter.
fn assert_collected(p: &Project, sim: &str, ids: &[&str]) {
    let collected = json(&p.labship_at(sim, &["collect", "--ec2", "week1.md", "-o", "json"], &[]));
    assert_eq!(collected["files"], ids.len(), "{collected}");
    for id in ids {
        assert_eq!(
            std::fs::read_to_string(p.path().join(format!("collected/{id}/week1.md")))
                .expect("collected"),
            "# Week 1\n",
            "seat {id}"
        );
    }
}

/// Seat `id`'s container on its shared host has `mib` MiB and half a CPU.
fn assert_limits(class: &str, id: &str, mib: u64) {
    let limits = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        &format!("labship-ec2-{class}-{id}"),
    ]);
    assert_eq!(
        limits.trim(),
        format!("{} 500000000", mib << 20),
        "seat {id}"
    );
}

/// The tag `key` of an instance (or group) as the AWS CLI shows it.
fn tag_of(resource: &Value, key: &str) -> Option<String> {
    resource["Tags"]
        .as_array()?
        .iter()
        .find(|t| t["Key"] == key)
        .and_then(|t| t["Value"].as_str())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ec2_class_packed_two_seats_to_an_instance_serves_each_seat_on_its_own_port() {
    let sim = sim_endpoint();
    let rig = rig();
    let p = Project::default_workload("epack");
    let class = p.name.clone();
    // Four seats, two to a host: seats 1 and 2 on one instance, 3 and 4 on another, each
    // seat on the class's port plus its place on its host.
    let port = free_ports(2);
    let port_s = port.to_string();
    // A type too small for two seats' limits is refused before anything of a seat is made.
    let mut small = ec2_up_args(&port_s);
    small.extend([
        "--seats",
        "2",
        "--seats-per-instance",
        "2",
        "--instance-type",
        "t3.medium",
    ]);
    let refused = p.labship_at(&sim, &small, &[]);
    assert!(!refused.status.success(), "{}", stderr(&refused));
    let roster: Value = serde_json::from_slice(&refused.stdout).expect("the roster as JSON");
    for id in ["1", "2"] {
        let error = rows_by_seat(&roster)[id]["error"].to_string();
        assert!(error.contains("cannot hold 2 seats"), "{roster}");
    }
    assert!(class_instances(&rig.aws_endpoint, &class).is_empty());
    assert!(class_group(&rig.aws_endpoint, &class).is_none());
    let token1 = aws_cli(
        &rig.aws_endpoint,
        &[
            "ssm",
            "get-parameter",
            "--name",
            &format!("/labship/{class}-1/token"),
        ],
    );
    assert!(!token1.status.success(), "seat 1's token was made");
    let mut args = ec2_up_args(&port_s);
    args.extend(["--seats", "4", "--seats-per-instance", "2"]);
    args.extend(["--seat-memory", "1024", "--seat-cpus", "0.5"]);
    let counted = Faults::new(&sim, "pack-calls");
    counted.set(
        0,
        serde_json::json!([
            {"action": "ec2:DescribeInstances", "param": {"InstanceId.2": "*"}, "delay": 0}
        ]),
    );
    let report = json(&p.labship_at(&sim, &args, &[("AWS_ACCESS_KEY_ID", counted.key.as_str())]));
    assert_eq!(report["ready"], 4, "{report}");
    let calls = |action: &str| counted.report()["calls"][action].as_u64().unwrap_or(0);
    // Both hosts by one RunInstances, each then tagged with its seats.
    assert_eq!(calls("ec2:RunInstances"), 1);
    assert_eq!(calls("ec2:CreateTags"), 2);
    // Four tokens, four data volumes.
    assert_eq!(calls("ssm:PutParameter"), 4);
    assert_eq!(calls("ec2:CreateVolume"), 4);
    assert_eq!(calls("ec2:AttachVolume"), 4);

    let rows = rows_by_seat(&report);
    let mut origin = BTreeMap::new();
    // Each on the class's port plus its place on its host.
    for (id, place) in [("1", 0), ("2", 1), ("3", 0), ("4", 1)] {
        origin.insert(id, seat_answers(&rows[id], id, port + place));
    }
    let host = |id: &str| origin[id].0.rsplit_once(':').expect("port").0.to_string();
    assert_eq!(host("1"), host("2"), "seats 1 and 2 share a host");
    assert_eq!(host("3"), host("4"), "seats 3 and 4 share a host");
    assert_ne!(host("1"), host("3"), "two hosts");
    // One certificate per host; a seat's token opens its own Jupyter only, also beside it.
    assert_eq!(origin["1"].1, origin["2"].1);
    assert_ne!(origin["1"].1, origin["3"].1);
    for (seat, other) in [("1", "2"), ("2", "1"), ("1", "3")] {
        let (at, pin, _) = &origin[seat];
        assert_eq!(
            crate::ec2::jupyter_status(at, pin, Some(&origin[other].2)),
            403,
            "seat {other}'s token must not open seat {seat}"
        );
    }

    // Each seat's container has its share of the host.
    for id in ["1", "2", "3", "4"] {
        assert_limits(&class, id, 1024);
    }

    // What AWS shows: two instances of the type sized for two seats of 1 GiB (none was
    // asked for: t3.medium's 4 GiB hold them), each tagged with its class and seats (no
    // deployment of its own), each seat's data volume on its host at its own device.
    let instances = class_instances(&rig.aws_endpoint, &class);
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert!(
        instances.iter().all(|i| i["InstanceType"] == "t3.medium"),
        "{instances:?}"
    );
    let mut seats_of: Vec<String> = instances
        .iter()
        .map(|i| tag_of(i, "labship:host-seats").expect("host seats"))
        .collect();
    seats_of.sort();
    assert_eq!(seats_of, ["1 2", "3 4"]);
    for i in &instances {
        assert_eq!(tag_of(i, "labship:deployment"), None, "{i}");
        assert_eq!(tag_of(i, "labship:seat"), None, "{i}");
        let id = i["InstanceId"].as_str().expect("id");
        let seats = tag_of(i, "labship:host-seats").expect("host seats");
        for (place, seat) in seats.split(' ').enumerate() {
            let volume = aws_json(
                &rig.aws_endpoint,
                &[
                    "ec2",
                    "describe-volumes",
                    "--filters",
                    &format!("Name=tag:labship:deployment,Values={class}-{seat}"),
                    "Name=tag:labship:volume,Values=workspace",
                ],
            );
            let attached = &volume["Volumes"][0]["Attachments"][0];
            assert_eq!(attached["InstanceId"], id, "seat {seat}: {volume}");
            let device = ["/dev/sdf", "/dev/sdg"][place];
            assert_eq!(attached["Device"], device, "seat {seat}: {volume}");
        }
    }
    // The class's group opens both ports, nothing else.
    let group = class_group(&rig.aws_endpoint, &class).expect("the class's security group");
    let mut ports: Vec<u64> = group["IpPermissions"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["FromPort"].as_u64())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [u64::from(port), u64::from(port) + 1], "{group}");

    // The roster again, from AWS alone; `up` again changes nothing.
    let roster = json(&p.labship_at(&sim, &["token", "--ec2", "-o", "json"], &[]));
    for id in ["1", "2", "3", "4"] {
        assert_eq!(
            rows_by_seat(&roster)[id]["url"],
            rows[id]["url"],
            "{roster}"
        );
    }
    let again = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(again["ready"], 4, "{again}");
    for id in ["1", "2", "3", "4"] {
        assert_eq!(rows_by_seat(&again)[id]["action"], "unchanged", "{again}");
    }
    assert_eq!(class_instances(&rig.aws_endpoint, &class).len(), 2);

    // distribute and collect reach each seat's own Jupyter.
    hand_out_and_collect(&p, &sim, &["1", "2", "3", "4"]);
    let image_of = |id: &str| {
        docker_ok(&[
            "inspect",
            "-f",
            "{{.Config.Image}}",
            &format!("labship-ec2-{class}-{id}"),
        ])
        .trim()
        .to_string()
    };
    let first_image = image_of("1");

    // A host stopped (as its watchdog stops it once its seats are idle), and a new image:
    // the class's `up` starts the host, and each seat of both hosts gets the new image
    // alone, through its host's script for it, with its own token and notebooks.
    let first_host = class_instances(&rig.aws_endpoint, &class)
        .into_iter()
        .find(|i| tag_of(i, "labship:host-seats").as_deref() == Some("1 2"))
        .and_then(|i| i["InstanceId"].as_str().map(str::to_string))
        .expect("the host of seats 1 and 2");
    // Through the simulator, which stops the host's containers as EC2 stops the instance.
    aws_json(
        &sim,
        &["ec2", "stop-instances", "--instance-ids", &first_host],
    );
    crate::alive::wait_state(
        &first_host,
        "stopped",
        std::time::Duration::from_secs(120),
        || {},
    );
    p.write("docker/resources/extra.txt", "week 2\n");
    let started = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(started["ready"], 4, "{started}");
    let started_rows = rows_by_seat(&started);
    // One of the host's seats starts it; the other finds it started or starting, and
    // replaces its container there.
    let action = |id: &str| {
        started_rows[id]["action"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        [action("1"), action("2")].contains(&"started".to_string())
            && ["started", "replaced"].contains(&action("1").as_str())
            && ["started", "replaced"].contains(&action("2").as_str()),
        "{started}"
    );
    for id in ["3", "4"] {
        assert_eq!(action(id), "replaced", "{started}");
    }
    let new_image = image_of("1");
    assert_ne!(new_image, first_image);
    for id in ["1", "2", "3", "4"] {
        assert_eq!(started_rows[id]["token"], rows[id]["token"], "{started}");
        assert_eq!(image_of(id), new_image, "seat {id}");
        // Its share of the host, as before.
        assert_limits(&class, id, 1024);
    }
    // What AWS shows: each seat's image on its host, the hosts' port and seats as they were.
    for i in class_instances(&rig.aws_endpoint, &class) {
        let seats = tag_of(&i, "labship:host-seats").expect("host seats");
        for seat in seats.split(' ') {
            let tagged = tag_of(&i, &format!("labship:image:{seat}"));
            assert_eq!(tagged.as_deref(), Some(new_image.as_str()), "{i}");
        }
        assert_eq!(tag_of(&i, "labship:port").as_deref(), Some(port_s.as_str()));
    }
    for id in ["1", "2", "3", "4"] {
        let url = started_rows[id]["url"].as_str().expect("url");
        let at = crate::ec2::origin_of(url);
        let (_, pin, token) = &origin[id];
        assert_eq!(
            crate::ec2::jupyter_status(&at, pin, Some(token)),
            200,
            "seat {id}"
        );
        origin.insert(id, (at, pin.clone(), token.clone()));
    }
    // The notebooks handed out before are still in every seat's workspace.
    std::fs::remove_dir_all(p.path().join("collected")).expect("the first collect's folder");
    assert_collected(&p, &sim, &["1", "2", "3", "4"]);

    // One seat's token rotated alone: its new token opens it and its old one no longer
    // does; its container keeps its limits, and the seat beside it is not touched.
    let container_id = |id: &str| {
        docker_ok(&[
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("labship-ec2-{class}-{id}"),
        ])
        .trim()
        .to_string()
    };
    let seat3_before = container_id("3");
    let rotated = json(&p.labship_at(
        &sim,
        &["token", "--ec2", "--rotate", "--seat", "4", "-o", "json"],
        &[],
    ));
    let new_token = rotated["token"].as_str().expect("token").to_string();
    let (at4, pin4, old4) = origin["4"].clone();
    assert_ne!(new_token, old4);
    assert_eq!(
        crate::ec2::jupyter_status(&at4, &pin4, Some(&new_token)),
        200
    );
    assert_eq!(crate::ec2::jupyter_status(&at4, &pin4, Some(&old4)), 403);
    assert_eq!(container_id("3"), seat3_before, "seat 3 was restarted");
    let (at3, pin3, token3) = &origin["3"];
    assert_eq!(crate::ec2::jupyter_status(at3, pin3, Some(token3)), 200);
    assert_limits(&class, "4", 1024);
    origin.insert("4", (at4, pin4, new_token));

    // A seat that cannot leave its host (Systems Manager refuses the command) stays on it:
    // `down --seat` fails, and neither its host nor anything of the seat is removed.
    let refused = Faults::new(&sim, "leave-refused");
    refused.set(
        0,
        serde_json::json!([{"action": "ssm:SendCommand", "fault": "unauthorized"}]),
    );
    let out = p.labship_at(
        &sim,
        &["down", "--ec2", "--yes", "--seat", "1"],
        &[("AWS_ACCESS_KEY_ID", refused.key.as_str())],
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_eq!(
        refused.report()["calls"]["ec2:TerminateInstances"],
        Value::Null
    );
    for id in ["1", "2"] {
        let (at, pin, token) = &origin[id];
        assert_eq!(
            crate::ec2::jupyter_status(at, pin, Some(token)),
            200,
            "seat {id}"
        );
    }
    let sealed = aws_cli(
        &rig.aws_endpoint,
        &[
            "ssm",
            "get-parameter",
            "--name",
            &format!("/labship/{class}-1/token"),
        ],
    );
    assert!(sealed.status.success(), "seat 1's token was deleted");

    // One seat taken down alone: it leaves its host, which goes on serving the seat beside
    // it; its data volume is detached and kept, its token deleted.
    let seat2_before = container_id("2");
    let left = p.labship_at(&sim, &["down", "--ec2", "--yes", "--seat", "1"], &[]);
    assert!(left.status.success(), "{}", stderr(&left));
    let gone = docker(&["container", "inspect", &format!("labship-ec2-{class}-1")]);
    assert!(!gone.status.success(), "seat 1's container is still there");
    assert_eq!(container_id("2"), seat2_before, "seat 2 was restarted");
    let (at2, pin2, token2) = &origin["2"];
    assert_eq!(crate::ec2::jupyter_status(at2, pin2, Some(token2)), 200);
    let instances = class_instances(&rig.aws_endpoint, &class);
    assert_eq!(instances.len(), 2, "{instances:?}");
    let host12 = instances
        .iter()
        .find(|i| i["InstanceId"] == first_host.as_str())
        .expect("the host of seats 1 and 2");
    assert_eq!(host12["State"]["Name"], "running", "{host12}");
    assert_eq!(tag_of(host12, "labship:host-gone").as_deref(), Some("1"));
    let volume = aws_json(
        &rig.aws_endpoint,
        &[
            "ec2",
            "describe-volumes",
            "--filters",
            &format!("Name=tag:labship:deployment,Values={class}-1"),
        ],
    );
    assert_eq!(volume["Volumes"][0]["State"], "available", "{volume}");
    let token1 = aws_cli(
        &rig.aws_endpoint,
        &[
            "ssm",
            "get-parameter",
            "--name",
            &format!("/labship/{class}-1/token"),
        ],
    );
    assert!(!token1.status.success(), "seat 1's token is still sealed");
    // Its host's roster has only seat 2 now.
    let roster = json(&p.labship_at(&sim, &["token", "--ec2", "-o", "json"], &[]));
    assert_eq!(
        rows_by_seat(&roster)["2"]["url"],
        started_rows["2"]["url"],
        "{roster}"
    );
    assert!(
        rows_by_seat(&roster)
            .get("1")
            .is_none_or(|r| r["url"].is_null()),
        "{roster}"
    );

    // Stopping one seat's host would stop the seat beside it: refused, naming it.
    let seat3 = format!("{class}-3");
    let out = p.labship_at(&sim, &["stop", &seat3, "--ec2"], &[]);
    assert!(!out.status.success());
    let err = unwrapped(&stderr(&out));
    assert!(err.contains("shares") && err.contains("seat(s) 4"), "{err}");
    for id in ["2", "3", "4"] {
        let (at, pin, token) = &origin[id];
        assert_eq!(
            crate::ec2::jupyter_status(at, pin, Some(token)),
            200,
            "seat {id}"
        );
    }

    // down of the class keeps each seat's data volume; the class's `up` again, three to an
    // instance, places the seats anew: 1, 2 and 3 on a host, each finding its own notebooks
    // on its volume at its new slot's device; the fourth, alone, on an instance of its own.
    json(&p.labship_at(&sim, &ec2_down_args(&[]), &[]));
    assert!(class_instances(&rig.aws_endpoint, &class).is_empty());
    let mut three = ec2_up_args(&port_s);
    three.extend(["--seats", "4", "--seats-per-instance", "3"]);
    let back = json(&p.labship_at(&sim, &three, &[]));
    assert_eq!(back["ready"], 4, "{back}");
    let instances = class_instances(&rig.aws_endpoint, &class);
    let mut hosts: Vec<String> = instances
        .iter()
        .map(|i| {
            tag_of(i, "labship:host-seats")
                .or_else(|| tag_of(i, "labship:seat").map(|s| format!("alone {s}")))
                .unwrap_or_default()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["1 2 3", "alone 4"], "{instances:?}");
    // Each sized for what it holds: three seats of the default 2 GiB and a CPU each, or one.
    for i in &instances {
        let want = if tag_of(i, "labship:seat").is_some() {
            "t3.medium"
        } else {
            "t3.xlarge"
        };
        assert_eq!(i["InstanceType"], want, "{i}");
    }
    std::fs::remove_dir_all(p.path().join("collected")).expect("the first collect's folder");
    // The four seats' notebooks are back.
    assert_collected(&p, &sim, &["1", "2", "3", "4"]);

    // down of the class: the hosts, every seat's token, volume and the group.
    json(&p.labship_at(&sim, &ec2_down_args(&["--delete-data"]), &[]));
    for id in ["1", "2", "3", "4"] {
        crate::ec2::assert_nothing_left(&format!("{class}-{id}")).await;
    }
    assert!(class_instances(&rig.aws_endpoint, &class).is_empty());
    assert!(class_group(&rig.aws_endpoint, &class).is_none());
}

/// `git ARGS` in `dir` (a committer set, so it works on a machine without git config).
fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Instructor",
            "-c",
            "user.email=i@example.org",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn notebooks_from_git_reach_every_seat_and_a_students_change_is_kept() {
    // The course's repository: lesson v1 and data, tagged v1.
    let repo = tempfile::tempdir().expect("tempdir");
    let r = repo.path();
    std::fs::write(r.join("lesson.ipynb"), "{\"v\": 1}\n").expect("write");
    std::fs::create_dir_all(r.join("data")).expect("mkdir");
    std::fs::write(r.join("data/points.csv"), "x,y\n1,2\n").expect("write");
    git(r, &["init", "-q"]);
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "week 1"]);
    git(r, &["tag", "v1"]);
    let url = r.to_str().expect("utf-8").to_string();

    let p = Project::default_workload("gitcls");
    let class = p.name.clone();
    let _cleanup = ClassCleanup(class.clone());
    // Cache of its own, so the test starts from a first clone.
    let cache = tempfile::tempdir().expect("cache");
    let mut toml = std::fs::read_to_string(p.path().join("labship.toml")).expect("toml");
    toml.push_str(&format!("[workspace]\ngit = \"{url}\"\n"));
    p.write("labship.toml", &toml);
    let with_cache = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("LABSHIP_CACHE_DIR", cache.path());
        cmd.output().expect("labship")
    };
    let up = json(&with_cache(&[
        "up", "--local", "--seats", "2", "-o", "json",
    ]));
    let rows = rows_by_seat(&up);
    let seats: BTreeMap<String, Seat> =
        rows.iter().map(|(k, v)| (k.clone(), Seat::of(v))).collect();
    for (id, s) in &seats {
        assert_eq!(
            s.read_text("lesson.ipynb").as_deref(),
            Some("{\"v\": 1}\n"),
            "seat {id}"
        );
        assert_eq!(
            s.read_text("data/points.csv").as_deref(),
            Some("x,y\n1,2\n"),
            "seat {id}"
        );
        assert_eq!(
            rows[id]["git"]["added"].as_array().map(Vec::len),
            Some(2),
            "{}",
            rows[id]
        );
    }
    // Seat 1's student works on the lesson; the instructor publishes week 2.
    seats["1"].put_text("lesson.ipynb", "{\"v\": 1, \"mine\": true}\n");
    std::fs::write(r.join("lesson.ipynb"), "{\"v\": 2}\n").expect("write");
    std::fs::write(r.join("week2.md"), "# Week 2\n").expect("write");
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "week 2"]);
    let given = json(&with_cache(&[
        "distribute",
        "--local",
        "--git",
        "-o",
        "json",
    ]));
    assert_eq!(given["failed"], 0, "{given}");
    let by_seat = rows_by_seat(&given);
    assert_eq!(
        by_seat["1"]["kept"],
        serde_json::json!(["lesson.ipynb"]),
        "{given}"
    );
    assert_eq!(
        by_seat["1"]["added"],
        serde_json::json!(["week2.md"]),
        "{given}"
    );
    assert_eq!(
        by_seat["2"]["updated"],
        serde_json::json!(["lesson.ipynb"]),
        "{given}"
    );
    assert_eq!(
        seats["1"].read_text("lesson.ipynb").as_deref(),
        Some("{\"v\": 1, \"mine\": true}\n")
    );
    assert_eq!(
        seats["2"].read_text("lesson.ipynb").as_deref(),
        Some("{\"v\": 2}\n")
    );
    for s in seats.values() {
        assert_eq!(s.read_text("week2.md").as_deref(), Some("# Week 2\n"));
    }
    // Without `[workspace] git` (a class made with `up --git URL`): `distribute --git` alone
    // says how to name the repository, and `--git URL` brings week 3.
    let toml = std::fs::read_to_string(p.path().join("labship.toml")).expect("toml");
    p.write(
        "labship.toml",
        &toml.replace(&format!("[workspace]\ngit = \"{url}\"\n"), ""),
    );
    let unnamed = with_cache(&["distribute", "--local", "--git"]);
    assert!(!unnamed.status.success());
    assert!(
        stderr(&unnamed).contains("labship distribute --git URL"),
        "{}",
        stderr(&unnamed)
    );
    // A file after `--git` is no repository: refused, with the command that hands it out.
    p.write("notes.md", "# Notes\n");
    let file = with_cache(&["distribute", "--local", "--git", "notes.md"]);
    assert!(
        !file.status.success() && stderr(&file).contains("labship distribute notes.md"),
        "{}",
        stderr(&file)
    );
    std::fs::write(r.join("week3.md"), "# Week 3\n").expect("write");
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "week 3"]);
    let given = json(&with_cache(&[
        "distribute",
        "--local",
        "--git",
        &url,
        "-o",
        "json",
    ]));
    let by_seat = rows_by_seat(&given);
    for (id, s) in &seats {
        assert_eq!(
            by_seat[id]["added"],
            serde_json::json!(["week3.md"]),
            "{given}"
        );
        assert_eq!(s.read_text("week3.md").as_deref(), Some("# Week 3\n"));
    }
    let down = p.labship(&["down", "--local", "--delete-data", "--yes"]);
    assert!(down.status.success(), "{}", stderr(&down));

    // A single deployment with --git URL#REF: the tagged week 1, not the branch's week 2.
    let single = Project::default_workload("gitone");
    let _single_cleanup = crate::local::Cleanup(single.name.clone());
    let spec = format!("{url}#v1");
    let mut cmd = single.command(&["up", "--local", "--git", &spec, "-o", "json"]);
    cmd.env("LABSHIP_CACHE_DIR", cache.path());
    let one = json(&cmd.output().expect("labship"));
    assert_eq!(
        one["git"]["added"],
        serde_json::json!(["data/points.csv", "lesson.ipynb"]),
        "{one}"
    );
    let seat = Seat {
        base: one["url"]
            .as_str()
            .expect("url")
            .split("/lab")
            .next()
            .expect("base")
            .to_string(),
        token: one["url"]
            .as_str()
            .expect("url")
            .split("token=")
            .nth(1)
            .expect("token")
            .to_string(),
    };
    assert_eq!(
        seat.read_text("lesson.ipynb").as_deref(),
        Some("{\"v\": 1}\n")
    );
    assert!(seat.read_text("week2.md").is_none());
    // A reference the repository does not have: an error before anything is made.
    let bad = single
        .command(&["up", "--local", "--git", &format!("{url}#nope")])
        .output()
        .expect("labship");
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("no branch, tag or") && err.contains("`nope`"),
        "{err}"
    );
    let down = single.labship(&["down", "--local", "--delete-data", "--yes"]);
    assert!(down.status.success(), "{}", stderr(&down));
}
