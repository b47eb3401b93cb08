fn main() {
    for src in [
        "record.post.text.contains(\"x\") && account.age < duration(\"7d\")",
        "text.tokens.exists(t, t in lists.bad)",
        "has(record.post.reply)",
        "a.b[0] + 1 == 2u",
        "foo(",
        "x.all(y, y > 1)",
    ] {
        match cel::parser::Parser::new().parse_with_source_info(src) {
            Ok((e, info)) => println!("{src}\n{:#?}\n{:?}", e, info.offset_for(e.id)),
            Err(e) => println!(
                "ERR {src}: {e}\n{:?}",
                e.errors.iter().map(|e| e.pos).collect::<Vec<_>>()
            ),
        }
    }
}
