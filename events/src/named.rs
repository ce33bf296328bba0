//! [`named_enum!`]: an enum whose every variant has a stable name (stored in a read model's
//! column, shown in the API or a metric's label), with `ALL`, `name` and `parse` made from one
//! list, so each name is written once and every such enum has the same shape.

/// Declares a field-less enum and, from one list of `Variant = "name"`, its `ALL` (declaration
/// order), `const fn name` and `parse` (the inverse of `name`). Attributes and doc comments pass
/// through; the enum must derive `Clone` and `Copy`.
///
/// ```
/// nullops_events::named_enum! {
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Light { Red = "red", Green = "green" }
/// }
/// assert_eq!(Light::parse(Light::Green.name()), Some(Light::Green));
/// assert_eq!(Light::ALL, [Light::Red, Light::Green]);
/// ```
#[macro_export]
macro_rules! named_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// Its stable name.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant called `name`, if any.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.name() == name)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::named_enum! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Sample {
            /// Documented.
            One = "one",
            Two = "two_words",
        }
    }

    #[test]
    fn every_name_parses_back_and_nothing_else_does() {
        assert_eq!(Sample::ALL, [Sample::One, Sample::Two]);
        for v in Sample::ALL {
            assert_eq!(Sample::parse(v.name()), Some(v));
        }
        assert_eq!(Sample::parse("One"), None);
        assert_eq!(Sample::Two.name(), "two_words");
    }
}
