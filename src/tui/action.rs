//! Keys become `Action`s (through the tables in `keys`); only `App::update` changes state. Tests
//! drive the app through the same two steps (`Action::from_key`, then `update`).
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// The six views, in the order of their number keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Setup,
    Dashboard,
    Compare,
    Presets,
    Runs,
    Sweeps,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Setup,
        View::Dashboard,
        View::Compare,
        View::Presets,
        View::Runs,
        View::Sweeps,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Setup => "Setup",
            View::Dashboard => "Dashboard",
            View::Compare => "Compare",
            View::Presets => "Presets",
            View::Runs => "Runs",
            View::Sweeps => "Sweeps",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `Esc`: cancel what is open or go back; never quits.
    Back,
    /// `q`: quit (asks first while a run is live or Setup has unsaved changes).
    Quit,
    /// `Ctrl-C`: quit from anywhere (asks first while a run is live).
    Interrupt,
    /// `Ctrl-Z`: suspend to the shell (`fg` comes back).
    Suspend,
    /// `?`
    Help,
    /// `Tab` / `Shift-Tab`
    FocusNext,
    FocusPrev,
    /// Arrows and `hjkl`.
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    /// `Home` / `g`, `End` / `G`: the first / last row of a list.
    First,
    Last,
    /// A mouse click on row `.1` of panel `.0` of the view (0: its list): a field of Setup, a
    /// row of Runs or Presets, a sweep or a point of Sweeps; on the Dashboard and Compare,
    /// whose panels have no rows, `Pick(panel, 0)` picks the panel (`mouse::action` reads the
    /// layout).
    Pick(usize, usize),
    /// The mouse wheel over panel `.0` of the view (0: its list), `.1` rows (down is positive).
    Wheel(usize, i32),
    /// `Enter`
    Select,
    /// `s`
    Start,
    /// `p`
    PauseResume,
    /// `x`
    Stop,
    /// `c`
    Compare,
    /// `1`–`6`
    Show(View),
    /// A view's own letter (`e` export, `d` delete, `n` new, … as its key table lists them), or
    /// an answer in a dialog.
    Key(char),
    /// Typing into a field or prompt.
    Input(char),
    Backspace,
    /// Editing a line (text mode only): `Delete`, `Ctrl-U` (to the start), `Ctrl-K` (to the
    /// end), `Ctrl-W` (the word before the cursor). `Home`/`Ctrl-A` and `End`/`Ctrl-E` are
    /// `First`/`Last`.
    DeleteForward,
    KillToStart,
    KillToEnd,
    KillWord,
    /// The terminal changed size.
    Resize,
}

/// How keys are read right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputMode {
    Normal,
    /// A text field or prompt has the keyboard: letters are text.
    Text,
    /// A yes/no or choice dialog: letters are answers, not commands.
    Dialog,
}

impl Action {
    /// The action of a key in `mode`. In normal mode it comes from the key tables
    /// (`keys::GLOBAL` and the views'), so a key that no table lists does nothing.
    pub fn from_key(key: KeyEvent, mode: InputMode) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Interrupt),
            KeyCode::Char('z') if ctrl => return Some(Action::Suspend),
            // A shell line's keys, where a line is being edited.
            KeyCode::Char(c) if ctrl && mode == InputMode::Text => {
                return match c {
                    'a' => Some(Action::First),
                    'e' => Some(Action::Last),
                    'u' => Some(Action::KillToStart),
                    'k' => Some(Action::KillToEnd),
                    'w' => Some(Action::KillWord),
                    _ => None,
                }
            }
            _ if ctrl => return None,
            _ => {}
        }
        if mode == InputMode::Normal {
            return super::keys::lookup(&key);
        }
        let common = match key.code {
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Enter => Some(Action::Select),
            KeyCode::Tab => Some(Action::FocusNext),
            KeyCode::BackTab => Some(Action::FocusPrev),
            KeyCode::Up => Some(Action::Up),
            KeyCode::Down => Some(Action::Down),
            KeyCode::Left => Some(Action::Left),
            KeyCode::Right => Some(Action::Right),
            KeyCode::PageUp => Some(Action::PageUp),
            KeyCode::PageDown => Some(Action::PageDown),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Home if mode == InputMode::Text => Some(Action::First),
            KeyCode::End if mode == InputMode::Text => Some(Action::Last),
            KeyCode::Delete if mode == InputMode::Text => Some(Action::DeleteForward),
            _ => None,
        };
        if common.is_some() {
            return common;
        }
        let KeyCode::Char(c) = key.code else {
            return None;
        };
        Some(match (mode, c) {
            (InputMode::Dialog, 'q') => Action::Quit,
            (InputMode::Dialog, 'x') => Action::Stop,
            (InputMode::Dialog, c) => Action::Key(c),
            (_, c) => Action::Input(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn letters_are_commands_only_in_normal_mode() {
        let s = key(KeyCode::Char('s'));
        assert_eq!(Action::from_key(s, InputMode::Normal), Some(Action::Start));
        assert_eq!(
            Action::from_key(s, InputMode::Text),
            Some(Action::Input('s'))
        );
        assert_eq!(
            Action::from_key(key(KeyCode::Char('3')), InputMode::Normal),
            Some(Action::Show(View::Compare))
        );
        let cc = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(
            Action::from_key(cc, InputMode::Text),
            Some(Action::Interrupt)
        );
        let cz = KeyEvent::new(KeyCode::Char('z'), KeyModifiers::CONTROL);
        for mode in [InputMode::Normal, InputMode::Text, InputMode::Dialog] {
            assert_eq!(
                Action::from_key(cz, mode),
                Some(Action::Suspend),
                "{mode:?}"
            );
        }
        // Esc cancels and q quits; in a text field q is a letter.
        assert_eq!(
            Action::from_key(key(KeyCode::Esc), InputMode::Normal),
            Some(Action::Back)
        );
        assert_eq!(
            Action::from_key(key(KeyCode::Char('q')), InputMode::Normal),
            Some(Action::Quit)
        );
        assert_eq!(
            Action::from_key(key(KeyCode::Char('q')), InputMode::Text),
            Some(Action::Input('q'))
        );
        assert_eq!(
            Action::from_key(key(KeyCode::BackTab), InputMode::Normal),
            Some(Action::FocusPrev)
        );
    }

    #[test]
    fn shell_line_keys_edit_only_in_text_mode() {
        let ctrl = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL);
        for (k, want) in [
            (ctrl('a'), Action::First),
            (ctrl('e'), Action::Last),
            (ctrl('u'), Action::KillToStart),
            (ctrl('k'), Action::KillToEnd),
            (ctrl('w'), Action::KillWord),
            (key(KeyCode::Home), Action::First),
            (key(KeyCode::End), Action::Last),
            (key(KeyCode::Delete), Action::DeleteForward),
        ] {
            assert_eq!(Action::from_key(k, InputMode::Text), Some(want), "{k:?}");
            assert_ne!(
                Action::from_key(k, InputMode::Dialog),
                Some(Action::KillWord),
                "{k:?}"
            );
        }
        assert_eq!(Action::from_key(ctrl('w'), InputMode::Normal), None);
        assert_eq!(Action::from_key(ctrl('u'), InputMode::Dialog), None);
    }
}
