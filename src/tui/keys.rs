//! Every key of the workbench, declared once: one table for the keys that work everywhere and
//! one per view. Key dispatch (`Action::from_key`), the help popup (`help::draw`) and the
//! footer's hints (`footer`) are all read from these tables, so help cannot drift from what the
//! keys do (tests/tui_keys.rs walks them against the handlers).
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::{Action, View};

/// One key: a code, with or without Ctrl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

impl Key {
    pub const fn new(code: KeyCode) -> Key {
        Key { code, ctrl: false }
    }

    pub const fn ctrl(c: char) -> Key {
        Key {
            code: KeyCode::Char(c),
            ctrl: true,
        }
    }

    pub fn event(self) -> KeyEvent {
        let m = if self.ctrl {
            KeyModifiers::CONTROL
        } else {
            KeyModifiers::NONE
        };
        KeyEvent::new(self.code, m)
    }

    /// True if `ev` is this key (Shift is ignored: it is part of the character or `BackTab`).
    pub fn matches(self, ev: &KeyEvent) -> bool {
        ev.code == self.code && ev.modifiers.contains(KeyModifiers::CONTROL) == self.ctrl
    }
}

/// How a row appears in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Help only.
    None,
    /// In the footer as `<keys as help writes them> <label>`.
    Label(&'static str),
    /// In the footer with fewer keys than help lists: `<keys> <label>`.
    Keys(&'static str, &'static str),
}

/// One row of help: the keys, the action each one sends, how help writes the keys, what they do,
/// and how the row appears in the footer.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub keys: &'static [(Key, Action)],
    pub shown: &'static str,
    pub help: &'static str,
    pub hint: Hint,
}

/// The keys of one view.
#[derive(Debug)]
pub struct ViewKeys {
    pub view: View,
    pub bindings: &'static [Binding],
    /// The footer's word for `q` here (`back`, or `quit` where there is usually nothing to go
    /// back to).
    pub back: &'static str,
}

const fn k(code: KeyCode) -> Key {
    Key::new(code)
}

const fn ch(c: char) -> Key {
    Key::new(KeyCode::Char(c))
}

const UP: Key = k(KeyCode::Up);
const DOWN: Key = k(KeyCode::Down);
const LEFT: Key = k(KeyCode::Left);
const RIGHT: Key = k(KeyCode::Right);
const PGUP: Key = k(KeyCode::PageUp);
const PGDN: Key = k(KeyCode::PageDown);
const TAB: Key = k(KeyCode::Tab);
const BACKTAB: Key = k(KeyCode::BackTab);
const ENTER: Key = k(KeyCode::Enter);
const ESC: Key = k(KeyCode::Esc);

const fn row(
    keys: &'static [(Key, Action)],
    shown: &'static str,
    help: &'static str,
    hint: Hint,
) -> Binding {
    Binding {
        keys,
        shown,
        help,
        hint,
    }
}

/// Keys that work in every view (in normal mode: not while a field, prompt or dialog has the
/// keyboard). `?` and `q` also close the footer of every view.
pub const GLOBAL: &[Binding] = &[
    row(
        &[
            (ch('1'), Action::Show(View::Setup)),
            (ch('2'), Action::Show(View::Dashboard)),
            (ch('3'), Action::Show(View::Compare)),
            (ch('4'), Action::Show(View::Presets)),
            (ch('5'), Action::Show(View::Runs)),
        ],
        "1–5",
        "Setup, Dashboard, Compare, Presets, Runs",
        Hint::None,
    ),
    row(
        &[(TAB, Action::FocusNext), (BACKTAB, Action::FocusPrev)],
        "Tab S-Tab",
        "move the focus",
        Hint::None,
    ),
    row(
        &[
            (UP, Action::Up),
            (DOWN, Action::Down),
            (LEFT, Action::Left),
            (RIGHT, Action::Right),
            (ch('h'), Action::Left),
            (ch('j'), Action::Down),
            (ch('k'), Action::Up),
            (ch('l'), Action::Right),
        ],
        "↑↓←→ hjkl",
        "move, change",
        Hint::None,
    ),
    row(&[(ENTER, Action::Select)], "Enter", "select", Hint::None),
    row(
        &[(ch('s'), Action::Start)],
        "s",
        "start the run set up in Setup",
        Hint::None,
    ),
    row(
        &[(ch('p'), Action::PauseResume)],
        "p",
        "pause / resume the open run",
        Hint::None,
    ),
    row(
        &[(ch('x'), Action::Stop)],
        "x",
        "stop the open run (checkpoint, summary)",
        Hint::None,
    ),
    row(&[(ch('c'), Action::Compare)], "c", "compare", Hint::None),
    row(
        &[(ch('?'), Action::Help)],
        "?",
        "this help",
        Hint::Label("help"),
    ),
    row(
        &[(ch('q'), Action::Back), (ESC, Action::Back)],
        "q Esc",
        "back; quit (asks while a run is live)",
        Hint::Keys("q", "back"),
    ),
    row(
        &[(Key::ctrl('c'), Action::Interrupt)],
        "Ctrl-C",
        "quit (asks while a run is live)",
        Hint::None,
    ),
];

const SETUP: ViewKeys = ViewKeys {
    view: View::Setup,
    back: "quit",
    bindings: &[
        row(
            &[
                (UP, Action::Up),
                (DOWN, Action::Down),
                (TAB, Action::FocusNext),
            ],
            "↑↓ Tab",
            "field",
            Hint::Keys("↑↓", "field"),
        ),
        row(
            &[(PGUP, Action::PageUp), (PGDN, Action::PageDown)],
            "PgUp PgDn",
            "eight fields up / down",
            Hint::None,
        ),
        row(
            &[
                (LEFT, Action::Left),
                (RIGHT, Action::Right),
                (ch('h'), Action::Left),
                (ch('l'), Action::Right),
            ],
            "←→ h l",
            "previous / next choice, step a number",
            Hint::Keys("←→", "change"),
        ),
        row(
            &[(ENTER, Action::Select)],
            "Enter",
            "edit the field (Enter keeps, Esc drops)",
            Hint::Label("edit"),
        ),
        row(
            &[(ch('s'), Action::Start)],
            "s",
            "start the run",
            Hint::Label("start"),
        ),
        row(
            &[(ch('c'), Action::Compare)],
            "c",
            "A/B: store A; again: launch A and B (same seed)",
            Hint::Label("A/B"),
        ),
    ],
};

const DASHBOARD: ViewKeys = ViewKeys {
    view: View::Dashboard,
    back: "back",
    bindings: &[
        row(
            &[(TAB, Action::FocusNext)],
            "Tab",
            "focus a panel",
            Hint::Label("panel"),
        ),
        row(
            &[(ENTER, Action::Select)],
            "Enter",
            "enlarge / restore the focused panel",
            Hint::Label("zoom"),
        ),
        row(
            &[
                (UP, Action::Up),
                (DOWN, Action::Down),
                (PGUP, Action::PageUp),
                (PGDN, Action::PageDown),
            ],
            "↑↓ PgUp PgDn",
            "scroll the log (when focused)",
            Hint::None,
        ),
        row(
            &[(LEFT, Action::Left), (RIGHT, Action::Right)],
            "←→",
            "previous / next open run",
            Hint::Label("run"),
        ),
        row(
            &[(ch('p'), Action::PauseResume)],
            "p",
            "pause / resume",
            Hint::Label("pause"),
        ),
        row(&[(ch('x'), Action::Stop)], "x", "stop", Hint::Label("stop")),
        row(
            &[(ch('c'), Action::Compare)],
            "c",
            "compare the last two open runs",
            Hint::Label("compare"),
        ),
    ],
};

const COMPARE: ViewKeys = ViewKeys {
    view: View::Compare,
    back: "back",
    bindings: &[
        row(
            &[(TAB, Action::FocusNext)],
            "Tab",
            "focus a panel",
            Hint::Label("panel"),
        ),
        row(
            &[(ENTER, Action::Select)],
            "Enter",
            "enlarge / restore the focused panel",
            Hint::Label("zoom"),
        ),
        row(
            &[(LEFT, Action::Left), (RIGHT, Action::Right)],
            "←→",
            "open A / B in the Dashboard",
            Hint::Label("open A/B"),
        ),
        row(
            &[(ch('w'), Action::Key('w'))],
            "w",
            "swap A and B",
            Hint::Label("swap"),
        ),
    ],
};

const PRESETS: ViewKeys = ViewKeys {
    view: View::Presets,
    back: "back",
    bindings: &[
        row(
            &[(UP, Action::Up), (DOWN, Action::Down)],
            "↑↓",
            "preset",
            Hint::None,
        ),
        row(
            &[(ENTER, Action::Select)],
            "Enter",
            "load into Setup",
            Hint::Label("load"),
        ),
        row(
            &[(ch('n'), Action::Key('n'))],
            "n",
            "save the current setup as a new preset",
            Hint::Label("save setup"),
        ),
        row(
            &[(ch('u'), Action::Key('u'))],
            "u",
            "duplicate the selected preset",
            Hint::Label("duplicate"),
        ),
        row(
            &[(ch('d'), Action::Key('d'))],
            "d",
            "delete the selected user preset",
            Hint::Label("delete"),
        ),
        row(
            &[(TAB, Action::FocusNext)],
            "Tab",
            "scroll the TOML instead",
            Hint::None,
        ),
    ],
};

const RUNS: ViewKeys = ViewKeys {
    view: View::Runs,
    back: "back",
    bindings: &[
        row(
            &[
                (UP, Action::Up),
                (DOWN, Action::Down),
                (PGUP, Action::PageUp),
                (PGDN, Action::PageDown),
            ],
            "↑↓ PgUp PgDn",
            "run",
            Hint::None,
        ),
        row(
            &[(ENTER, Action::Select)],
            "Enter",
            "open in the Dashboard (replay, or attach if live)",
            Hint::Label("open"),
        ),
        row(
            &[(ch(' '), Action::Key(' '))],
            "space",
            "mark for Compare (two)",
            Hint::Label("mark"),
        ),
        row(
            &[(ch('c'), Action::Compare)],
            "c",
            "compare the marked runs",
            Hint::Label("compare"),
        ),
        row(
            &[(ch('e'), Action::Key('e'))],
            "e",
            "export steps.csv and evals.csv",
            Hint::Label("export CSV"),
        ),
        row(
            &[(ch('d'), Action::Key('d'))],
            "d",
            "delete (asks; not while live)",
            Hint::Label("delete"),
        ),
        row(&[(ch('r'), Action::Key('r'))], "r", "refresh", Hint::None),
    ],
};

/// The keys of `view`.
pub fn of(view: View) -> &'static ViewKeys {
    match view {
        View::Setup => &SETUP,
        View::Dashboard => &DASHBOARD,
        View::Compare => &COMPARE,
        View::Presets => &PRESETS,
        View::Runs => &RUNS,
    }
}

/// The action of `ev` in normal mode: the global table first, then the views' (a key means the
/// same action in every view that lists it; what the action does is the view's business).
pub fn lookup(ev: &KeyEvent) -> Option<Action> {
    let views = View::ALL.iter().flat_map(|v| of(*v).bindings.iter());
    GLOBAL
        .iter()
        .chain(views)
        .flat_map(|b| b.keys.iter())
        .find(|(k, _)| k.matches(ev))
        .map(|(_, a)| a.clone())
}

/// True if `view`'s help (its own rows or the global ones) lists a key that sends `action`.
pub fn documents(view: View, action: &Action) -> bool {
    GLOBAL
        .iter()
        .chain(of(view).bindings)
        .flat_map(|b| b.keys.iter())
        .any(|(_, a)| a == action)
}

/// The footer's hints for `view`: its rows that have a hint, then the global ones.
pub fn footer(view: View) -> String {
    let vk = of(view);
    let hint = |b: &Binding| match b.hint {
        Hint::None => None,
        Hint::Label(l) => Some(format!("{} {l}", b.shown)),
        Hint::Keys(k, l) => {
            let l = if b.keys.iter().any(|(_, a)| *a == Action::Back) {
                vk.back
            } else {
                l
            };
            Some(format!("{k} {l}"))
        }
    };
    vk.bindings
        .iter()
        .chain(GLOBAL)
        .filter_map(hint)
        .collect::<Vec<_>>()
        .join("  ")
}

/// The rows of `view`'s help: `(keys, what they do)`.
pub fn help_rows(view: View) -> impl Iterator<Item = (&'static str, &'static str)> {
    of(view).bindings.iter().map(|b| (b.shown, b.help))
}

/// The rows of the help's "Everywhere" part.
pub fn global_rows() -> impl Iterator<Item = (&'static str, &'static str)> {
    GLOBAL.iter().map(|b| (b.shown, b.help))
}

/// How help would write one key (for checking that a row's `shown` names all its keys).
pub fn name(key: Key) -> String {
    if key.ctrl {
        if let KeyCode::Char(c) = key.code {
            return format!("Ctrl-{}", c.to_ascii_uppercase());
        }
    }
    match key.code {
        KeyCode::Char(' ') => "space".into(),
        KeyCode::Char(c) => c.to_string(),
        KeyCode::Up => "↑".into(),
        KeyCode::Down => "↓".into(),
        KeyCode::Left => "←".into(),
        KeyCode::Right => "→".into(),
        KeyCode::PageUp => "PgUp".into(),
        KeyCode::PageDown => "PgDn".into(),
        KeyCode::Tab => "Tab".into(),
        KeyCode::BackTab => "S-Tab".into(),
        KeyCode::Enter => "Enter".into(),
        KeyCode::Esc => "Esc".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footers_read_as_before() {
        let want = [
            (
                View::Setup,
                "↑↓ field  ←→ change  Enter edit  s start  c A/B  ? help  q quit",
            ),
            (
                View::Dashboard,
                "Tab panel  Enter zoom  ←→ run  p pause  x stop  c compare  ? help  q back",
            ),
            (
                View::Compare,
                "Tab panel  Enter zoom  ←→ open A/B  w swap  ? help  q back",
            ),
            (
                View::Presets,
                "Enter load  n save setup  u duplicate  d delete  ? help  q back",
            ),
            // `q back` was missing from the hand-written line; q goes back here too.
            (
                View::Runs,
                "Enter open  space mark  c compare  e export CSV  d delete  ? help  q back",
            ),
        ];
        for (v, line) in want {
            assert_eq!(footer(v), line, "{v:?}");
        }
    }

    #[test]
    fn unlisted_keys_send_nothing_in_normal_mode() {
        let ev = |c| Key::new(KeyCode::Char(c)).event();
        assert_eq!(lookup(&ev('w')), Some(Action::Key('w')));
        assert_eq!(lookup(&ev('y')), None);
        assert_eq!(lookup(&Key::new(KeyCode::Backspace).event()), None);
    }
}
