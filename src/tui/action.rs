//! Keys become `Action`s (through the tables in `keys`); only `App::update` changes state. Tests
//! drive the app through the same two steps (`Action::from_key`, then `update`).
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// The five views, in the order of their number keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Setup,
    Dashboard,
    Compare,
    Presets,
    Runs,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Setup,
        View::Dashboard,
        View::Compare,
        View::Presets,
        View::Runs,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Setup => "Setup",
            View::Dashboard => "Dashboard",
            View::Compare => "Compare",
            View::Presets => "Presets",
            View::Runs => "Runs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `q` / `Esc`: close what is open, go back, or quit.
    Back,
    /// `Ctrl-C`: quit from anywhere (asks first while a run is live).
    Interrupt,
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
    /// `1`–`5`
    Show(View),
    /// A view's own letter (`e` export, `d` delete, `n` new, … as its key table lists them), or
    /// an answer in a dialog.
    Key(char),
    /// Typing into a field or prompt.
    Input(char),
    Backspace,
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
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return Some(Action::Interrupt);
        }
        if ctrl {
            return None;
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
            _ => None,
        };
        if common.is_some() {
            return common;
        }
        let KeyCode::Char(c) = key.code else {
            return None;
        };
        Some(match (mode, c) {
            (InputMode::Dialog, 'q') => Action::Back,
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
        assert_eq!(
            Action::from_key(key(KeyCode::BackTab), InputMode::Normal),
            Some(Action::FocusPrev)
        );
    }
}
