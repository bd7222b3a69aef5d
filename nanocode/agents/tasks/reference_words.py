"""Words for the first part of fresh names in training tasks: every lower-case word of 3 to 10 letters that occurs
at least 5 times in the Python reference manual's topics (`pydoc_data`, CPython 3.11's `help()` text), frozen here
so that a task is the same on every Python version.

templates.FRESH_WORDS drops the ones that start like a held-out name's first word (templates.HELDOUT_NAME_STARTS).
An SFT model copies a word at a name's start about as well as training made it write that word there: these widen
the words it copies, not the held-out ones (d6, benchmarks/sft_conditioning_results.md, session 28).
"""

REFERENCE_WORDS: tuple[str, ...] = tuple(
    """
    abc able about above abs absolute abstract accept accepted access accessed accesses accessible accessing across
    actual actually add added adding addition additional aexit affect after again against algorithm alias aliases
    align aligned alignment alive all allow allowed allows already also although always annotation another any
    anything appear appears append applied applies apply arbitrary are arg args argument arguments arithmetic around
    array asked assign assigned assignment assigns associated attached attempt attempted attr attribute attributes
    auditing augmented augtarget automatic available avoid back backslash bacon bad bar base based bases baz because
    become becomes been before begins behavior behaviour being below between bin binary bind binding bindings binds
    bit bits bitwise block blocks body bool boolean both bound boundaries bpnumber braces brackets breakpoint builds
    built builtin builtins but byte bytearray bytecode bytes call callable called caller calling calls can cannot
    case cased cases category caught cause caused causes center centered certain change changed changes character
    characters chars check classes clause clauses cleanup clear cleared close cls code collected collection colon
    column com comma command commands common commonly compare compared comparing comparison compatible compile
    compiled complex compound compute computed condition considered contain contained container containers
    containing contains contents context contexts continues control convenient convention conversion convert
    converted converts copied copy coroutine correctly could count create created creates creating creation current
    currently custom customize customized cycle data debug debugged debugger debugging decimal declared decorated
    decorator decorators default defaults define defined defines defining definition delete deleted deletion denote
    denotes depend depending depends derived described descriptor desired destroyed detail details detected
    determine determined dict dictionary dictview differ difference different digit digitpart digits dir direct
    directly discarded dishes display displays division divmod docstring does doesn don done double due during
    dynamic each earlier effect efficient eggs either element elements empty emulate enabled enclosed enclosing
    encoding end enter entered entire entries entry enum equal equality equivalent error errors escape escapes etc
    eval evaluate evaluated evaluates evaluating evaluation even event every exactly example examples exception
    exceptions excess exec executable execute executed executes executing execution exist existing exit exited
    explicit explicitly exponent expression extend extension extra fact fail failed fails fall falls false feature
    features field fields file filename files fill fillchar filled find first fixed flag float floating floor flow
    follow followed following follows foo form formal format formatted formatting formed found four frame frames
    free frozenset full func funcname function functions further future garbage general generally generator generic
    get gets given gives globals grammar greater group grouping groups guaranteed guarantees guard had hand handle
    handled handler handlers handles handling happened happens has hash hashable have header help hence here hex
    hierarchy hints hook how however identified identifier identity ignore ignored illegal imaginary immediate
    immutable implement implements implicit implicitly implies important imported include included includes
    including index indexed indexes indicate indicated indicates indices indirect individual inherit inherits insert
    inserted inserting insertion inside inspect instance instances instead int integer integers intended interface
    into introduced invocation invoke invoked isinstance isupper item items iter iterable iterate iterated iterating
    iteration iterator its itself juice just key keys keyword keywords kind known kwargs language large larger last
    later latter lead leading least leaving left len length less letter letters level levels lexical library like
    likely line lineno lines list listed lists literal literals loaded local locale locals logical longer look
    looked looking lookup loop lower lowercase lst made make makes manager managers many map mapping mappings match
    matched matches matching math maxsize maxsplit may meaning means mechanism membership memory mentioned message
    metaclass method methods missing model modified modifies module modules modulo more mortem most multiple must
    mutable name named names namespace nearest necessary need needed needs negative neither nested never new newline
    newly next non nor normal normally notation note nothing now number numbers numeric numerical obj object objects
    occur occurred occurrence occurring occurs oct octal often old omitted once one only open operand operands
    operation operations operator operators option optional options order ordered ordering original other otherwise
    out outer output outside over overridden override overrides overriding own owner package pair pairs parameter
    parameters parent part particular passed passes pattern patterns pdb pdbrc penguin per performed performs place
    placed point points pop popitem position positional positive possible possibly post pow power precedence
    preceding precise precision prefix prefixed present preserved prevent previous previously primary print
    printable printed priority private proceeds process processed produce produced program prompt propagated proper
    properties property proposal protocol provide provided provides public purpose purposes python quote quoted
    quotes raised raises range rather raw reached read real really reason recent recognized refer reference
    referenced references refers reflected reflection registered regular related relative release remaining remove
    removed removes removing repeated repetition replace replaced repr represent represents requested require
    required requires reserved resolution resolved resource rest result resulting results retrieved returned returns
    reverse reversed rich right roughly rules run running runtime said same sausage saved scope script search
    searched second section see selected selects self semantics sense sensitive sep separated separator sequence
    sequences set sets setting several shared shift should shown shows side sign similar simple since single
    singleton size skip slice slicing slot slots soft some sort sorted sorting source space spacious spam special
    specific specified specifies specify specifying split splitlines splits square stack standard star start
    starting starts state statement statements static stdin step steps still stop store stored str strictly string
    strings style sub subclass subclasses subject subpattern subscript substring succeed succeeds such suffix suite
    super supplied support supported supports suppress syntax sys system tab table take taken takes target targets
    terminates terms test testing tests text than that the their them themselves then there therefore these they
    third this those though three through time times titlecase together too top total trace traceback trailing
    translated treated true truth tuple tuples two type typed types typically typing unary unbound unchanged
    undefined under underlying underscore understood unhashable unique unless unlike unpacking until update upper
    uppercase usable usage use used useful user users uses using usually utf val valid value values variable
    variables various version versions via view views virtual warning was way weak well were what when where whether
    which whitespace whose width will wishes within without word words work works would wrapped wrapper writable
    write written yet yields you zero zeros
    """.split()
)
