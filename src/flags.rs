//! Strict command-line flags for every subcommand (lexopt): an unknown
//! flag, a stray argument, a missing or repeated value is an error.

/// A subcommand's flags; `parse` gives None for `--help`.
pub struct Flags {
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
}

impl Flags {
    pub fn parse(
        args: &[&str],
        with_value: &[&'static str],
        switches: &[&'static str],
    ) -> Result<Option<Flags>, String> {
        Flags::parse_repeatable(args, with_value, &[], switches)
    }

    /// As `parse`; the options in `repeatable` (also in `with_value`) may
    /// be given more than once (`values`).
    pub fn parse_repeatable(
        args: &[&str],
        with_value: &[&'static str],
        repeatable: &[&str],
        switches: &[&'static str],
    ) -> Result<Option<Flags>, String> {
        use lexopt::Arg;
        let mut p = lexopt::Parser::from_args(args.iter().copied());
        let mut f = Flags {
            values: Vec::new(),
            switches: Vec::new(),
        };
        while let Some(arg) = p.next().map_err(|e| e.to_string())? {
            match arg {
                Arg::Long("help") | Arg::Short('h') => return Ok(None),
                Arg::Long(n) => {
                    if let Some(&name) = with_value.iter().find(|x| **x == n) {
                        let v = p
                            .value()
                            .map_err(|e| e.to_string())?
                            .into_string()
                            .map_err(|v| format!("--{name}: {v:?} is not UTF-8"))?;
                        if f.value(name).is_some() && !repeatable.contains(&name) {
                            return Err(format!("--{name} given twice"));
                        }
                        f.values.push((name, v));
                    } else if let Some(&name) = switches.iter().find(|x| **x == n) {
                        f.switches.push(name);
                    } else {
                        return Err(format!("unknown option --{n}"));
                    }
                }
                other => return Err(other.unexpected().to_string()),
            }
        }
        Ok(Some(f))
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable option, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }
}
