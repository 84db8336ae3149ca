//! Parsing what a client typed: a message, or one of the slash commands.

use unicode_normalization::char::is_combining_mark;

use super::names;

/// One line of client input, understood.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Text for the room. `//text` sends `/text`.
    Say(&'a str),
    Nick(&'a str),
    Join(&'a str),
    Rooms(Option<&'a str>),
    Who(Option<&'a str>),
    Msg(&'a str, &'a str),
    Me(&'a str),
    History(Option<usize>),
    /// `/part [REASON]`: back to the default room (every client is in exactly one room).
    Part(&'a str),
    /// `/topic` shows the room's topic, `/topic TEXT` sets it, `/topic -delete` clears it.
    Topic(Option<&'a str>),
    Whois(&'a str),
    /// `/away TEXT` sets an away message, `/away` clears it.
    Away(Option<&'a str>),
    Help,
    Quit(&'a str),
    /// A command that is missing an argument or is not known, with the message to show.
    Bad(String),
}

/// The text `/help` shows.
pub const HELP: &[&str] = &[
    "Commands:",
    "  /nick NAME        change your nick",
    "  /join ROOM        go to another room (made if new); also /j",
    "  /part [REASON]    leave this room, back to the default room (you stay connected)",
    "  /rooms [WORD]     the busiest rooms and how many are in each (or those named WORD); also /list",
    "  /who [ROOM]       who is in this room (or ROOM); also /names",
    "  /topic [TEXT]     show the room's topic, or set it (/topic -delete clears it)",
    "  /msg NICK TEXT    private message; also /query",
    "  /whois NICK       who NICK is: room, connected since, idle time, away message; also /w",
    "  /away [TEXT]      mark yourself away (told to whoever /msgs you); without TEXT, back",
    "  /me ACTION        say what you are doing",
    "  /history [N]      the room's last N messages",
    "  /help             this list",
    "  /quit [REASON]    leave the server",
    "Anything else is said to the room; start with // to say something that begins with /.",
];

impl<'a> Command<'a> {
    pub fn parse(line: &'a str) -> Command<'a> {
        if line.starts_with("//") {
            return Command::Say(&line[1..]);
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Command::Say(line);
        };
        let (name, args) = match rest.split_once(char::is_whitespace) {
            Some((n, a)) => (n, a.trim()),
            None => (rest, ""),
        };
        let need = |what: &str| Command::Bad(format!("usage: /{name} {what}"));
        match name.to_ascii_lowercase().as_str() {
            "nick" if args.is_empty() => need("NAME"),
            "nick" => Command::Nick(args),
            "join" | "j" if args.is_empty() => need("ROOM"),
            "join" | "j" => Command::Join(args),
            "part" | "leave" => Command::Part(args),
            "topic" => Command::Topic((!args.is_empty()).then_some(args)),
            "whois" | "w" if args.is_empty() => need("NICK"),
            "whois" | "w" => Command::Whois(args),
            "away" => Command::Away((!args.is_empty()).then_some(args)),
            "rooms" | "list" => Command::Rooms((!args.is_empty()).then_some(args)),
            "who" | "names" => Command::Who((!args.is_empty()).then_some(args)),
            "msg" | "query" => match args.split_once(char::is_whitespace) {
                Some((nick, text)) if !text.trim().is_empty() => Command::Msg(nick, text.trim()),
                _ => need("NICK TEXT"),
            },
            "me" if args.is_empty() => need("ACTION"),
            "me" => Command::Me(args),
            "history" if args.is_empty() => Command::History(None),
            "history" => match args.parse::<usize>() {
                Ok(n) if n > 0 => Command::History(Some(n)),
                _ => need("[N]   (N a number of messages)"),
            },
            "help" | "?" => Command::Help,
            "quit" | "exit" => Command::Quit(args),
            _ => Command::Bad(format!("unknown command /{name}; /help lists the commands")),
        }
    }
}

/// Checks a nick: 1 to `max` characters, letters (any script, with the combining marks it writes
/// with), digits, and `_ - . [ ] { } | ^`, not starting with a digit or `-`; nothing invisible and
/// no mixing of scripts (see [`names::check`]). Nicks that look alike are one nick to the hub.
pub fn check_nick(nick: &str, max: usize) -> Result<(), String> {
    let len = nick.chars().count();
    if len == 0 || len > max {
        return Err(format!("a nick is 1 to {max} characters long"));
    }
    let allowed = |c: char| c.is_alphanumeric() || is_combining_mark(c) || "_-.[]{}|^".contains(c);
    if !nick.chars().all(allowed) {
        return Err("a nick may contain letters, digits and _ - . [ ] { } | ^ only".into());
    }
    if nick.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return Err("a nick may not start with a digit or -".into());
    }
    names::check(nick, "a nick")
}

/// Checks and normalises a room name: an optional leading `#`, 1 to 32 letters (with their
/// combining marks), digits, `_ - .`, checked like nicks ([`names::check`]), and returned in its
/// canonical form ([`names::room_key`]): case, fullwidth and other compatibility forms, and names
/// made only of lookalikes of Latin letters all lead to one room.
///
/// Rooms are keyed and shown by this form. A room's key could instead be its skeleton, as nicks'
/// are, but the skeleton is not for showing (`room1` would read `rooml`), and the hub keeps one
/// name per room; so whatever remains distinct after canonicalising is visibly distinct, or
/// refused by the checks.
pub fn room_name(text: &str) -> Result<String, String> {
    let name = text.strip_prefix('#').unwrap_or(text);
    let too_long = || "a room name is 1 to 32 characters long".to_string();
    let len = name.chars().count();
    if len == 0 || len > 32 {
        return Err(too_long());
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || is_combining_mark(c) || "_-.".contains(c))
    {
        return Err("a room name may contain letters, digits and _ - . only".into());
    }
    names::check(name, "a room name")?;
    let key = names::room_key(name);
    // Compatibility forms can expand (one ligature is 18 letters).
    let len = key.chars().count();
    if len == 0
        || len > 32
        || !key
            .chars()
            .all(|c| c.is_alphanumeric() || is_combining_mark(c) || "_-.".contains(c))
    {
        return Err(too_long());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(Command::parse("hi"), Command::Say("hi"));
        assert_eq!(Command::parse("//etc"), Command::Say("/etc"));
        assert_eq!(Command::parse("/nick ann"), Command::Nick("ann"));
        assert_eq!(
            Command::parse("/msg bob hi there"),
            Command::Msg("bob", "hi there")
        );
        assert_eq!(Command::parse("/HISTORY 5"), Command::History(Some(5)));
        assert_eq!(Command::parse("/quit"), Command::Quit(""));
        assert_eq!(Command::parse("/part"), Command::Part(""));
        assert_eq!(Command::parse("/j rust"), Command::Join("rust"));
        assert_eq!(Command::parse("/w ann"), Command::Whois("ann"));
        assert!(matches!(Command::parse("/whois"), Command::Bad(_)));
        assert_eq!(Command::parse("/topic"), Command::Topic(None));
        assert_eq!(Command::parse("/topic a b"), Command::Topic(Some("a b")));
        assert_eq!(Command::parse("/away"), Command::Away(None));
        assert_eq!(Command::parse("/away lunch"), Command::Away(Some("lunch")));
        assert!(matches!(Command::parse("/msg bob"), Command::Bad(_)));
        assert!(matches!(Command::parse("/frobnicate"), Command::Bad(_)));
    }

    #[test]
    fn nick_and_room_rules() {
        assert!(check_nick("ann", 16).is_ok());
        assert!(check_nick("张伟", 16).is_ok());
        assert!(check_nick("", 16).is_err());
        assert!(check_nick("a b", 16).is_err());
        assert!(check_nick("1ann", 16).is_err());
        assert!(check_nick("abcdefghijklmnopq", 16).is_err());
        assert_eq!(room_name("#Rust").unwrap(), "rust");
        assert!(room_name("a/b").is_err());
    }
}
