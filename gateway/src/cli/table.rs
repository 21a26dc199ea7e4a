//! Aligned tables as `wg show` and `tailscale status` print them: a header, columns two spaces
//! apart, numbers right-aligned, no trailing blanks.

/// Where a column's cells sit in its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles, every column left-aligned.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|title| title.to_string()).collect(),
            align: vec![Align::Left; header.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the columns at these positions (counts, byte sizes).
    pub fn right(mut self, columns: &[usize]) -> Table {
        for &column in columns {
            self.align[column] = Align::Right;
        }
        self
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "a row of {} cells", cells.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, each line after `indent`; nothing for a table without rows.
    pub fn render(&self, indent: &str) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let width = |cell: &String| cell.chars().count();
        let mut widths = vec![0; self.header.len()];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (column, cell) in row.iter().enumerate() {
                widths[column] = widths[column].max(width(cell));
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(column, cell)| {
                    let pad = " ".repeat(widths[column] - width(cell));
                    match self.align[column] {
                        Align::Left => format!("{cell}{pad}"),
                        Align::Right => format!("{pad}{cell}"),
                    }
                })
                .collect();
            text += indent;
            text += cells.join("  ").trim_end();
            text += "\n";
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_counting_characters() {
        let mut table = Table::new(&["PEER", "RX", "NAME"]).right(&[1]);
        table.row(vec!["abc…".into(), "1.00 KiB".into(), "".into()]);
        table.row(vec!["abcdefgh".into(), "12 B".into(), "phone".into()]);
        assert_eq!(
            table.render("  "),
            "  PEER            RX  NAME\n  abc…      1.00 KiB\n  abcdefgh      12 B  phone\n"
        );
        assert_eq!(Table::new(&["A"]).render(""), "");
    }
}
