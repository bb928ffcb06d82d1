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
    /// Rows listed after `bindings` that other views share (the charts' keys).
    pub shared: &'static [Binding],
    /// The footer's word for `Esc` here; `None` where there is usually nothing to go back to
    /// (the footer then leaves `Esc` out; it still cancels).
    pub back: Option<&'static str>,
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
const HOME: Key = k(KeyCode::Home);
const END: Key = k(KeyCode::End);
const TAB: Key = k(KeyCode::Tab);
const BACKTAB: Key = k(KeyCode::BackTab);
const ENTER: Key = k(KeyCode::Enter);
const ESC: Key = k(KeyCode::Esc);

impl ViewKeys {
    /// Every row of the view: its own, then the shared ones.
    pub fn rows(&self) -> impl Iterator<Item = &'static Binding> {
        self.bindings.iter().chain(self.shared)
    }
}

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
/// keyboard). `Esc` and `q` also close the footer of every view.
pub const GLOBAL: &[Binding] = &[
    row(
        &[
            (ch('1'), Action::Show(View::Setup)),
            (ch('2'), Action::Show(View::Dashboard)),
            (ch('3'), Action::Show(View::Compare)),
            (ch('4'), Action::Show(View::Presets)),
            (ch('5'), Action::Show(View::Runs)),
            (ch('6'), Action::Show(View::Sweeps)),
        ],
        "1–6",
        "Setup, Dashboard, Compare, Presets, Runs, Sweeps",
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
        "start the run set up in Setup (asks first)",
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
    row(&[(ch('?'), Action::Help)], "?", "this help", Hint::None),
    row(
        &[(ESC, Action::Back)],
        "Esc",
        "cancel, close, go back (never quits)",
        Hint::Keys("Esc", "back"),
    ),
    row(
        &[(ch('q'), Action::Quit)],
        "q",
        "quit (asks if runs are live or Setup unsaved)",
        Hint::Label("quit"),
    ),
    row(
        &[(Key::ctrl('c'), Action::Interrupt)],
        "Ctrl-C",
        "quit (asks while a run is live)",
        Hint::None,
    ),
    row(
        &[(Key::ctrl('z'), Action::Suspend)],
        "Ctrl-Z",
        "suspend to the shell (fg comes back)",
        Hint::None,
    ),
];

/// What the mouse does (with mouse capture on; `CPTLAB_NO_MOUSE=1` turns it off), for help.
/// The actions it sends are `Action::Pick` and `Action::Wheel` (see `mouse`).
pub const MOUSE: &[(&str, &str)] = &[
    ("click", "a tab, a Setup field, a row, a panel"),
    ("wheel", "scroll a list, the fields, the log; zoom charts"),
];

/// The charts' keys (Dashboard and Compare).
const CHART: &[Binding] = &[
    row(
        &[(ch('m'), Action::Key('m'))],
        "m",
        "loss smoothing: off, 0.6, 0.8, 0.9, 0.95, 0.99",
        Hint::Label("smooth"),
    ),
    row(
        &[(ch('y'), Action::Key('y'))],
        "y",
        "loss y axis: auto, log, linear",
        Hint::Label("log-y"),
    ),
    row(
        &[
            (ch('+'), Action::Key('+')),
            (ch('='), Action::Key('=')),
            (ch('-'), Action::Key('-')),
        ],
        "+ = -",
        "zoom the steps in / out (around the cursor)",
        Hint::Keys("+-", "range"),
    ),
    row(
        &[(ch('['), Action::Key('[')), (ch(']'), Action::Key(']'))],
        "[ ]",
        "pan the steps left / right",
        Hint::None,
    ),
    row(
        &[(ch('0'), Action::Key('0'))],
        "0",
        "the whole run again (zoom and pan reset)",
        Hint::None,
    ),
    row(
        &[(ch('i'), Action::Key('i'))],
        "i",
        "cursor: values at a step (←→ move, Esc hides)",
        Hint::Label("cursor"),
    ),
];

const SETUP: ViewKeys = ViewKeys {
    shared: &[],
    view: View::Setup,
    back: None,
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
            "edit (shell keys, Tab: a path) or open the list",
            Hint::Label("edit"),
        ),
        row(
            &[(ch('s'), Action::Start)],
            "s",
            "start the run (shows what starts, asks)",
            Hint::Label("start"),
        ),
        row(
            &[(ch('c'), Action::Compare)],
            "c",
            "A/B: store A; again: launch A and B (same seed)",
            Hint::Label("A/B"),
        ),
        row(
            &[(ch('e'), Action::Key('e'))],
            "e",
            "edit the whole config as TOML in $EDITOR",
            Hint::Label("$EDITOR"),
        ),
        row(
            &[(ESC, Action::Back)],
            "Esc",
            "forget a stored A",
            Hint::None,
        ),
    ],
};

const DASHBOARD: ViewKeys = ViewKeys {
    shared: CHART,
    view: View::Dashboard,
    back: Some("back"),
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
            "the cursor, else previous / next run",
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
            "compare the open runs",
            Hint::Label("compare"),
        ),
    ],
};

const COMPARE: ViewKeys = ViewKeys {
    shared: CHART,
    view: View::Compare,
    back: Some("back"),
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
            "the cursor, else highlight another run",
            Hint::Label("run"),
        ),
        row(
            &[(ch('o'), Action::Key('o'))],
            "o",
            "open the highlighted run in the Dashboard",
            Hint::Label("open"),
        ),
        row(
            &[(ch('w'), Action::Key('w'))],
            "w",
            "make the highlighted run the baseline (Δ)",
            Hint::Label("baseline"),
        ),
    ],
};

const PRESETS: ViewKeys = ViewKeys {
    shared: &[],
    view: View::Presets,
    back: Some("back"),
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
            "load into Setup (asks over unsaved edits)",
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
    shared: &[],
    view: View::Runs,
    back: Some("back"),
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
            &[
                (ch('g'), Action::First),
                (HOME, Action::First),
                (ch('G'), Action::Last),
                (END, Action::Last),
            ],
            "g Home G End",
            "first / last run",
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
            "mark for Compare (up to 8)",
            Hint::Label("mark"),
        ),
        row(
            &[(ch('c'), Action::Compare)],
            "c",
            "compare the marked runs",
            Hint::Label("compare"),
        ),
        row(
            &[(ch('/'), Action::Key('/'))],
            "/",
            "filter by name, model, status (Esc clears)",
            Hint::Label("filter"),
        ),
        row(
            &[(ch('o'), Action::Key('o'))],
            "o",
            "sort: newest, name, status, accuracy, time",
            Hint::Label("sort"),
        ),
        row(
            &[(ch('e'), Action::Key('e'))],
            "e",
            "export steps.csv and evals.csv",
            Hint::Label("export"),
        ),
        row(
            &[(ch('d'), Action::Key('d'))],
            "d",
            "delete (asks; not while live)",
            Hint::Label("delete"),
        ),
        row(
            &[(ch('u'), Action::Key('u'))],
            "u",
            "clone the run's config into Setup",
            Hint::Label("clone"),
        ),
        row(
            &[(ch('r'), Action::Key('r'))],
            "r",
            "resume an incomplete or stopped run",
            Hint::Label("resume"),
        ),
        row(&[(ch('R'), Action::Key('R'))], "R", "refresh", Hint::None),
    ],
};

const SWEEPS: ViewKeys = ViewKeys {
    shared: &[],
    view: View::Sweeps,
    back: Some("back"),
    bindings: &[
        row(
            &[
                (UP, Action::Up),
                (DOWN, Action::Down),
                (PGUP, Action::PageUp),
                (PGDN, Action::PageDown),
            ],
            "↑↓ PgUp PgDn",
            "sweep, or point in the points table",
            Hint::None,
        ),
        row(
            &[
                (ch('g'), Action::First),
                (HOME, Action::First),
                (ch('G'), Action::Last),
                (END, Action::Last),
            ],
            "g Home G End",
            "first / last",
            Hint::None,
        ),
        row(
            &[(TAB, Action::FocusNext), (BACKTAB, Action::FocusPrev)],
            "Tab S-Tab",
            "sweeps list / points table",
            Hint::Keys("Tab", "points"),
        ),
        row(
            &[(ENTER, Action::Select)],
            "Enter",
            "a sweep's points; a point's run in Dashboard",
            Hint::Label("open"),
        ),
        row(
            &[(ch(' '), Action::Key(' '))],
            "space",
            "mark a point for Compare (up to 8)",
            Hint::Label("mark"),
        ),
        row(
            &[(ch('c'), Action::Compare)],
            "c",
            "compare marked points, else the done ones (≤ 8)",
            Hint::Label("compare"),
        ),
        row(&[(ch('R'), Action::Key('R'))], "R", "refresh", Hint::None),
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
        View::Sweeps => &SWEEPS,
    }
}

/// The action of `ev` in normal mode: the global table first, then the views' (a key means the
/// same action in every view that lists it; what the action does is the view's business).
pub fn lookup(ev: &KeyEvent) -> Option<Action> {
    let views = View::ALL.iter().flat_map(|v| of(*v).rows());
    GLOBAL
        .iter()
        .chain(views)
        .flat_map(|b| b.keys.iter())
        .find(|(k, _)| k.matches(ev))
        .map(|(_, a)| a.clone())
}

/// True if `view`'s help (its own rows or the global ones) lists a key that sends `action`;
/// the mouse's actions are documented by the `MOUSE` rows.
pub fn documents(view: View, action: &Action) -> bool {
    if matches!(action, Action::Pick(..) | Action::Wheel(..)) {
        return !MOUSE.is_empty();
    }
    GLOBAL
        .iter()
        .chain(of(view).rows())
        .flat_map(|b| b.keys.iter())
        .any(|(_, a)| a == action)
}

/// The footer's hints for `view`: its rows that have a hint, then the global ones (`Esc` only
/// where the view has something to go back to).
pub fn footer(view: View) -> String {
    footer_parts(view).join("  ")
}

fn footer_parts(view: View) -> Vec<String> {
    let vk = of(view);
    let hint = |b: &Binding| match b.hint {
        Hint::None => None,
        Hint::Label(l) => Some(format!("{} {l}", b.shown)),
        Hint::Keys(k, l) => {
            if b.keys.iter().any(|(_, a)| *a == Action::Back) {
                vk.back.map(|w| format!("{k} {w}"))
            } else {
                Some(format!("{k} {l}"))
            }
        }
    };
    vk.rows().chain(GLOBAL).filter_map(hint).collect()
}

/// The footer in at most `w` characters: the view's last hints give way first, `Esc` and `q`
/// stay (help lists everything).
pub fn footer_fit(view: View, w: usize) -> String {
    let mut parts = footer_parts(view);
    let global = GLOBAL.iter().filter(|b| b.hint != Hint::None).count()
        - usize::from(of(view).back.is_none());
    let len = |p: &[String]| p.iter().map(|s| s.chars().count() + 2).sum::<usize>();
    while len(&parts) > w + 2 && parts.len() > global {
        parts.remove(parts.len() - global - 1);
    }
    parts.join("  ")
}

/// The rows of `view`'s help: `(keys, what they do)`.
pub fn help_rows(view: View) -> impl Iterator<Item = (&'static str, &'static str)> {
    of(view).rows().map(|b| (b.shown, b.help))
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
        KeyCode::Home => "Home".into(),
        KeyCode::End => "End".into(),
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
    fn footers_end_with_back_and_quit() {
        let want = [
            (
                View::Setup,
                "↑↓ field  ←→ change  Enter edit  s start  c A/B  e $EDITOR  q quit",
            ),
            (
                View::Dashboard,
                "Tab panel  Enter zoom  ←→ run  p pause  x stop  c compare  m smooth  y log-y  +- range  i cursor  Esc back  q quit",
            ),
            (
                View::Compare,
                "Tab panel  Enter zoom  ←→ run  o open  w baseline  m smooth  y log-y  +- range  i cursor  Esc back  q quit",
            ),
            (
                View::Presets,
                "Enter load  n save setup  u duplicate  d delete  Esc back  q quit",
            ),
            (
                View::Runs,
                "Enter open  space mark  c compare  / filter  o sort  e export  d delete  u clone  r resume  Esc back  q quit",
            ),
            (
                View::Sweeps,
                "Tab points  Enter open  space mark  c compare  Esc back  q quit",
            ),
        ];
        for (v, line) in want {
            assert_eq!(footer(v), line, "{v:?}");
        }
    }

    #[test]
    fn a_narrow_footer_keeps_back_and_quit() {
        let f = footer_fit(View::Dashboard, 79);
        assert!(f.chars().count() <= 79, "{f}");
        assert!(f.ends_with("Esc back  q quit"), "{f}");
        assert!(f.starts_with("Tab panel  Enter zoom"), "{f}");
        assert_eq!(footer_fit(View::Setup, 200), footer(View::Setup));
    }

    #[test]
    fn unlisted_keys_send_nothing_in_normal_mode() {
        let ev = |c| Key::new(KeyCode::Char(c)).event();
        assert_eq!(lookup(&ev('w')), Some(Action::Key('w')));
        assert_eq!(lookup(&ev('Y')), None);
        assert_eq!(lookup(&ev('q')), Some(Action::Quit));
        assert_eq!(lookup(&Key::new(KeyCode::Esc).event()), Some(Action::Back));
        assert_eq!(lookup(&Key::new(KeyCode::Backspace).event()), None);
    }
}
