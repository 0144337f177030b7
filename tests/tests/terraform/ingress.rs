//! Ingress rules: which ports the security groups and NSGs open, with any value their port variables accept.

#[allow(unused_imports)]
use super::*;

// --- Ingress rules --------------------------------------------------------------------

pub(super) const INGRESS: &[&str] = &["ingress"];
pub(super) const INBOUND: &[&str] = &["Inbound"];
pub(super) const ALLOW: &[&str] = &["Allow"];

/// How a rule names its ports.
enum Ports<'a> {
    /// AWS: `from_port` and `to_port` (absent: every port).
    FromTo(Option<&'a Expression>, Option<&'a Expression>),
    /// Azure: `destination_port_range(s)`, each a number, `"N"`, `"N-M"` or `"*"` (none:
    /// every port).
    Ranges(Vec<&'a Expression>),
}

/// An ingress rule found in a module.
pub(super) struct Rule<'a> {
    at: String,
    /// The rule opens ports only when each expression evaluates to one of its values
    /// (ignoring case); an expression that does not evaluate counts as matching.
    applies_when: Vec<(&'a Expression, &'static [&'static str])>,
    /// A protocol that may mean "all traffic" (AWS `-1` or `all`).
    protocol: Option<&'a Expression>,
    ports: Ports<'a>,
}

/// The bodies of the nested blocks `name` of `body`, `dynamic "name"` contents included.
pub(super) fn nested<'a>(body: &'a Body, name: &'a str) -> impl Iterator<Item = &'a Body> + 'a {
    body.blocks().filter_map(move |b| {
        if b.identifier() == name {
            Some(b.body())
        } else if b.identifier() == "dynamic" && label(b, 0) == Some(name) {
            b.body()
                .blocks()
                .find(|c| c.identifier() == "content")
                .map(|c| c.body())
        } else {
            None
        }
    })
}

pub(super) fn aws_rule<'a>(
    at: String,
    body: &'a Body,
    applies_when: Vec<(&'a Expression, &'static [&'static str])>,
    protocol: &str,
) -> Rule<'a> {
    Rule {
        at,
        applies_when,
        protocol: attr(body, protocol),
        ports: Ports::FromTo(attr(body, "from_port"), attr(body, "to_port")),
    }
}

pub(super) fn azure_rule(at: String, body: &Body) -> Rule<'_> {
    let mut applies_when = Vec::new();
    if let Some(direction) = attr(body, "direction") {
        applies_when.push((direction, INBOUND));
    }
    if let Some(access) = attr(body, "access") {
        applies_when.push((access, ALLOW));
    }
    let ports = ["destination_port_range", "destination_port_ranges"]
        .iter()
        .filter_map(|k| attr(body, k))
        .collect();
    Rule {
        at,
        applies_when,
        protocol: None,
        ports: Ports::Ranges(ports),
    }
}

/// Every ingress rule of the module: AWS security-group rules (separate resources and
/// inline blocks) and Azure NSG rules (separate resources and inline blocks).
pub(super) fn ingress_rules(m: &Module) -> Vec<Rule<'_>> {
    let mut rules = Vec::new();
    for (path, b) in m.blocks("resource") {
        let (Some(ty), Some(name)) = (label(b, 0), label(b, 1)) else {
            continue;
        };
        let at = format!("{}: {ty}.{name}", path.display());
        let body = b.body();
        match ty {
            "aws_vpc_security_group_ingress_rule" => {
                rules.push(aws_rule(at, body, Vec::new(), "ip_protocol"));
            }
            "aws_security_group_rule" => {
                let when = attr(body, "type")
                    .map(|t| vec![(t, INGRESS)])
                    .unwrap_or_default();
                rules.push(aws_rule(at, body, when, "protocol"));
            }
            "aws_security_group" => {
                for (i, ingress) in nested(body, "ingress").enumerate() {
                    rules.push(aws_rule(
                        format!("{at} ingress #{i}"),
                        ingress,
                        Vec::new(),
                        "protocol",
                    ));
                }
            }
            "azurerm_network_security_rule" => rules.push(azure_rule(at, body)),
            "azurerm_network_security_group" => {
                for (i, rule) in nested(body, "security_rule").enumerate() {
                    rules.push(azure_rule(format!("{at} security_rule #{i}"), rule));
                }
            }
            _ => {}
        }
    }
    rules
}

/// One port number.
pub(super) fn single_port(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{v:?} is not a port")),
        Value::String(s) => s.trim().parse().map_err(|_| format!("{s:?} is not a port")),
        other => Err(format!("{other:?} is not a port")),
    }
}

/// The port ranges a port value stands for.
pub(super) fn port_ranges(v: &Value) -> Result<Vec<(u64, u64)>, String> {
    match v {
        Value::String(s) if s.trim() == "*" => Ok(vec![(0, 65535)]),
        Value::String(s) if s.contains('-') => {
            let (a, b) = s.split_once('-').expect("a range");
            let from = single_port(&Value::from(a))?;
            let to = single_port(&Value::from(b))?;
            Ok(vec![(from, to)])
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(port_ranges(item)?);
            }
            Ok(out)
        }
        other => single_port(other).map(|p| vec![(p, p)]),
    }
}

/// The port ranges `rule` opens when `var` holds `vars` (empty when it does not apply).
pub(super) fn opened(
    rule: &Rule<'_>,
    vars: &hcl::Map<String, Value>,
) -> Result<Vec<(u64, u64)>, String> {
    for (expr, accepted) in &rule.applies_when {
        let value = eval(expr, vars);
        if matches!(&value, Ok(Value::String(s)) if !accepted.iter().any(|a| a.eq_ignore_ascii_case(s)))
        {
            return Ok(Vec::new());
        }
    }
    if let Some(protocol) = rule.protocol {
        let all = match eval(protocol, vars)? {
            Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "-1" | "all" | "*"),
            Value::Number(n) => n.as_i64() == Some(-1),
            _ => false,
        };
        if all {
            return Ok(vec![(0, 65535)]);
        }
    }
    match &rule.ports {
        Ports::FromTo(Some(from), Some(to)) => Ok(vec![(
            single_port(&eval(from, vars)?)?,
            single_port(&eval(to, vars)?)?,
        )]),
        Ports::FromTo(..) => Ok(vec![(0, 65535)]),
        Ports::Ranges(exprs) if exprs.is_empty() => Ok(vec![(0, 65535)]),
        Ports::Ranges(exprs) => {
            let mut out = Vec::new();
            for expr in exprs {
                out.extend(port_ranges(&eval(expr, vars)?)?);
            }
            Ok(out)
        }
    }
}

/// The forbidden ports within `ranges`.
pub(super) fn forbidden_in(ranges: &[(u64, u64)]) -> Vec<u64> {
    FORBIDDEN_PORTS
        .into_iter()
        .filter(|p| ranges.iter().any(|(a, b)| a <= p && p <= b))
        .collect()
}

/// Whether one of `variable`'s validation conditions is false when `var` holds `vars`.
pub(super) fn refused(variable: &Block, vars: &hcl::Map<String, Value>) -> bool {
    variable
        .body()
        .blocks()
        .filter(|b| b.identifier() == "validation")
        .filter_map(|v| attr(v.body(), "condition"))
        .any(|c| matches!(eval(c, vars), Ok(Value::Bool(false))))
}

/// What is wrong with the module's ingress rules: a forbidden port opened with the
/// defaults, or with a value of a number variable that its validation does not refuse, or
/// ports that cannot be told from the HCL.
pub(super) fn port_findings(m: &Module) -> Vec<String> {
    let defaults = m.defaults();
    let variables = m.variables();
    let mut findings = Vec::new();
    for rule in ingress_rules(m) {
        match opened(&rule, &defaults) {
            Err(e) => findings.push(format!(
                "{}: cannot tell which ports it opens ({e}); keep port expressions to literals and var.*",
                rule.at
            )),
            Ok(ranges) => {
                for p in forbidden_in(&ranges) {
                    findings.push(format!("{}: opens port {p}", rule.at));
                }
            }
        }
        for (name, variable) in &variables {
            if !matches!(defaults.get(name), Some(Value::Number(_))) {
                continue;
            }
            for p in FORBIDDEN_PORTS {
                let mut vars = defaults.clone();
                vars.insert(name.clone(), Value::from(p));
                let Ok(ranges) = opened(&rule, &vars) else {
                    continue;
                };
                if !forbidden_in(&ranges).is_empty() && !refused(variable, &vars) {
                    findings.push(format!(
                        "{}: var.{name} = {p} opens a forbidden port, and no validation of var.{name} refuses it",
                        rule.at
                    ));
                }
            }
        }
    }
    findings
}

pub(super) fn inline_module(src: &str) -> Module {
    Module {
        dir: PathBuf::from("inline"),
        files: vec![TfFile {
            path: PathBuf::from("inline.tf"),
            body: hcl::parse(src).unwrap(),
        }],
    }
}

#[test]
pub(super) fn no_ingress_rule_opens_ssh_the_runtime_or_a_sentinel_port() {
    let all = modules(&infra());
    let mut rules = 0;
    let mut findings = Vec::new();
    for m in all.values() {
        rules += ingress_rules(m).len();
        findings.extend(port_findings(m));
    }
    assert!(findings.is_empty(), "{}", findings.join("\n"));
    // The AWS relay rule and the two NSG rules, at least: the check is not vacuous.
    assert!(
        rules >= 3,
        "only {rules} ingress rules found under infra-terraform"
    );

    // The relay port the examples set, in the module calls and the tfvars examples.
    for rel in [AWS_EXAMPLE, AZURE_EXAMPLE] {
        let m = module(&all, rel);
        let defaults = m.defaults();
        for (path, call) in m.blocks("module") {
            let port = attr(call.body(), "relay_port").unwrap_or_else(|| {
                panic!("{}: the module call sets no relay_port", path.display())
            });
            let port = single_port(&eval(port, &defaults).unwrap()).unwrap();
            assert!(
                !FORBIDDEN_PORTS.contains(&port),
                "{}: relay_port {port}",
                path.display()
            );
        }
        let tfvars = m.dir.join("terraform.tfvars.example");
        let body = hcl::parse(&std::fs::read_to_string(&tfvars).unwrap()).unwrap();
        let port = single_port(&Value::from(attr(&body, "relay_port").unwrap().clone())).unwrap();
        assert!(
            !FORBIDDEN_PORTS.contains(&port),
            "{}: relay_port {port}",
            tfvars.display()
        );
    }
}

#[test]
pub(super) fn the_port_check_catches_rules_that_open_forbidden_ports() {
    let validated = r#"
        variable "p" {
          description = "the relay port"
          default     = 8443
          validation {
            condition     = var.p >= 1 && floor(var.p) == var.p
            error_message = "a port"
          }
          validation {
            condition     = var.p != 22 && var.p != 8000 && var.p != 8001 && var.p != 8002 && var.p != 8081
            error_message = "not an internal port"
          }
        }
    "#;
    let aws = r#"
        resource "aws_vpc_security_group_ingress_rule" "r" {
          ip_protocol = "tcp"
          from_port   = var.p
          to_port     = var.p
        }
    "#;
    let azure = r#"
        resource "azurerm_network_security_rule" "r" {
          direction              = "Inbound"
          access                 = "Allow"
          destination_port_range = var.p
        }
    "#;
    // A validated port variable is fine, for both clouds.
    for rule in [aws, azure] {
        let m = inline_module(&format!("{validated}{rule}"));
        assert_eq!(ingress_rules(&m).len(), 1);
        assert!(port_findings(&m).is_empty(), "{:?}", port_findings(&m));
    }
    let caught = |src: &str| {
        let m = inline_module(src);
        assert!(!port_findings(&m).is_empty(), "not caught:\n{src}");
    };
    // The runtime's port as the default.
    caught(&format!("variable \"p\" {{\n default = 8081\n}}\n{aws}"));
    caught(&format!("variable \"p\" {{\n default = 8081\n}}\n{azure}"));
    // A safe default, but nothing refuses 8081.
    caught(&format!("variable \"p\" {{\n default = 8443\n}}\n{aws}"));
    // Literal ranges, all traffic, inline blocks, lists, wildcards.
    caught(
        r#"resource "aws_security_group" "s" {
             ingress {
               from_port = 8000
               to_port   = 8100
               protocol  = "tcp"
             }
           }"#,
    );
    caught(
        r#"resource "aws_security_group_rule" "r" {
             type      = "ingress"
             protocol  = "-1"
             from_port = 0
             to_port   = 0
           }"#,
    );
    caught(
        r#"resource "azurerm_network_security_group" "n" {
             security_rule {
               direction               = "Inbound"
               access                  = "Allow"
               destination_port_ranges = ["443", "22"]
             }
           }"#,
    );
    caught(
        r#"resource "azurerm_network_security_rule" "r" {
             direction              = "Inbound"
             access                 = "Allow"
             destination_port_range = "*"
           }"#,
    );
    // Ports the HCL alone cannot tell.
    caught(
        r#"resource "aws_vpc_security_group_ingress_rule" "r" {
             ip_protocol = "tcp"
             from_port   = local.port
             to_port     = local.port
           }"#,
    );
    // Deny rules and egress open nothing.
    let m = inline_module(
        r#"resource "azurerm_network_security_rule" "r" {
             direction              = "Inbound"
             access                 = "Deny"
             destination_port_range = "*"
           }
           resource "aws_security_group_rule" "e" {
             type      = "egress"
             protocol  = "-1"
             from_port = 0
             to_port   = 0
           }"#,
    );
    assert!(port_findings(&m).is_empty(), "{:?}", port_findings(&m));
}
