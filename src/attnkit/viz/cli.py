"""``attnkit plot --model DIR "机器翻译" [--attention cross|encoder|decoder] [--layer L] [--head H|mean|all]
[--output FILE.png|.svg]``: a heatmap of the sentence's cross-attention (output pieces over source pieces), or
of the Transformer's encoder or decoder self-attention. Layers and heads count from 1, as the report's menus
do (negative from the end: -1 is the last), in the options and in the titles alike."""

from __future__ import annotations

from pathlib import Path

from attnkit.cli import UserError, check_output_file, check_utf8_arguments, note_replaced, note_truncated, write_output


def add_arguments(parser) -> None:
    parser.add_argument("text", help="the sentence to translate and plot")
    parser.add_argument("--model", required=True, help="a model folder, or a training --out folder (uses its best/)")
    parser.add_argument("--layer", type=int, default=-1,
                        help="layer, counting from 1 (negative from the end): the decoder's for cross and decoder attention, "
                             "the encoder's for encoder attention (default: the last, -1)")
    parser.add_argument("--head", default="mean",
                        help="a head, counting from 1 (negative from the end), 'mean' (default) or 'all' for a grid of heads")
    parser.add_argument("--beam", type=int, default=4, help="beam size (default 4)")
    parser.add_argument("--attention", choices=["cross", "encoder", "decoder"], default="cross",
                        help="cross: output pieces over the source (default); encoder: the source's self-attention; "
                             "decoder: the output's causal self-attention")
    parser.add_argument("--output", type=Path, default=Path("attention.png"), help="PNG or SVG file (default attention.png)")


def run(args) -> int:
    from attnkit.decode.cli import check_decoding_memory
    from attnkit.decode.translator import Translation, Translator

    from .fonts import NoCJKFontError
    from .heatmap import layer_head_name, plot_attention, select_heads

    head = args.head if args.head in ("mean", "all") else None
    if head is None:
        try:
            head = int(args.head)
        except ValueError:
            raise UserError(f"--head must be a head's number (counting from 1), 'mean' or 'all', got {args.head!r}") from None
        if head == 0:
            raise UserError("--head counts from 1 (1 is the first head, -1 the last), got 0")
    if args.layer == 0:
        raise UserError("--layer counts from 1 (1 is the first layer, -1 the last), got 0")
    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if not args.text.strip():
        raise UserError("the sentence to plot is empty")
    check_utf8_arguments([args.text], "the sentence to plot")
    check_output_file(args.output, "--output", (".png", ".svg"))
    try:
        translator = Translator.load(args.model)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    if args.attention != "encoder":  # (the encoder's attention needs no decoding)
        check_decoding_memory(translator, [args.text], args.beam, need_attention=args.attention == "cross")
    if args.attention != "cross" and translator.truncates(args.text):  # the cross path notes it from its result
        cut = Translation(args.text, "", [], [], 0.0, truncated=True)
        note_truncated("plot", [cut], translator.max_source_tokens(), lambda i: "the sentence")
    try:
        if args.attention == "encoder":
            pieces, attention = translator.encoder_attention(args.text)
            rows, cols, title = pieces, pieces, f"{args.text}: encoder self-attention"
        elif args.attention == "decoder":
            pieces, attention = translator.decoder_attention(args.text, beam=args.beam)
            rows, cols, title = pieces, pieces, f"{args.text}: decoder self-attention"
        else:
            result = translator.translate([args.text], beam=args.beam, need_attention=True)[0]
            note_truncated("plot", [result], translator.max_source_tokens(), lambda i: "the sentence")
            if result.attention is None:
                raise ValueError(f"a {translator.model.config.kind} model has no attention to plot")
            attention = result.attention
            rows, cols = result.attention_rows, result.src_pieces
            title = f"{result.source} → {result.text}"
        layers, heads = attention.shape[:2]
        stack = "encoder" if args.attention == "encoder" else "decoder"
        layer = _index(args.layer, layers, "--layer", f"the model's {stack} has {layers} layer{'s' if layers != 1 else ''}")
        if isinstance(head, int):
            head = _index(head, heads, "--head", f"its attention has {heads} head{'s' if heads != 1 else ''}")
        weights = select_heads(attention, layer=layer, head=head)
    except ValueError as err:
        raise UserError(str(err)) from None
    # Named as people count them, and as the report's menus name them: from 1, a layer given as -1 by its
    # own number (a learner comparing "layer -1, head 0" here with "layer 3, head 1" there was lost).
    title = f"{title} ({layer_head_name(layer, head, layers, heads)})"
    titles = [layer_head_name(layer, h, layers, heads) for h in range(heads)] if head == "all" else None
    existed = args.output.is_file()
    try:
        # a temporary file renamed over --output: a failed write leaves an earlier picture as it was
        write_output(args.output, lambda tmp: plot_attention(weights, cols, rows, tmp, title=title, head_titles=titles))
    except NoCJKFontError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"--output {args.output}: cannot write it ({err.strerror or err})") from None
    if existed:
        note_replaced(args.output, "plot")
    print(f"{title}\nwrote {args.output}")
    return 0


def _index(number: int, count: int, flag: str, has: str) -> int:
    """The 0-based index of the ``number``-th of ``count`` layers or heads (counting from 1; negative from
    the end, -1 the last), or a :class:`UserError` naming ``flag`` that says what there is (``has``)."""
    if not (1 <= number <= count or -count <= number <= -1):
        raise UserError(f"{flag} {number}: {has} (1 to {count}, or -1 to -{count} from the end)")
    return number - 1 if number > 0 else number
