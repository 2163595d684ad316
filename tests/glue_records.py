"""GLUE in the official TSV layout and the records and T5 strings each file must give;
shared by the GLUE and all-task tests."""

MNLI_PARSES = "( ( x ) )\t( ( y ) )\t(ROOT (S x))\t(ROOT (S y))"
MNLI_HEAD = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2"
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
MRPC_HEAD = "#1 ID\t#2 ID\t#1 String\t#2 String"
PREMISE = "Conceptually cream skimming has two basic dimensions - product and geography."
HYPOTHESIS = "Product and geography are what make cream skimming work. "
AMROZI = 'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .'
REFERRING = 'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .'

# The official GLUE download's files (one or two rows each), by path under the GLUE directory.
RELEASE = {
    # CoLA's train and dev files have no header: source, label, original mark, sentence.
    "CoLA/train.tsv": "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\ngj04\t0\t*\tThey drank the pub.\n",
    "CoLA/dev.tsv": "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n",
    "CoLA/test.tsv": "index\tsentence\n0\tBill whistled past the house.\n",
    "SST-2/train.tsv": "sentence\tlabel\nhide new secretions from the parental units \t0\n",
    "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n",
    "SST-2/test.tsv": "index\tsentence\n0\tuneasy mishmash of styles and genres .\n",
    # MRPC's train/dev headers keep the byte-order mark of Microsoft's original file.
    "MRPC/train.tsv": f"\ufeffQuality\t{MRPC_HEAD}\n1\t702876\t702977\t{AMROZI}\t{REFERRING}\n",
    "MRPC/dev.tsv": f"\ufeffQuality\t{MRPC_HEAD}\n0\t1\t2\tHe left .\tShe stayed .\n",
    "MRPC/test.tsv": f"index\t{MRPC_HEAD}\n0\t1089874\t1089925\tPCCW 's chief operating officer resigned .\tThe officer left PCCW .\n",
    "QQP/train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n133273\t213221\t213222\tHow is the life of a math student?\tWhich level of preparation is enough?\t0\n",
    "QQP/dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t3\t4\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n",
    "QQP/test.tsv": "id\tquestion1\tquestion2\n0\tWhy am I mentally very lonely?\tHow can I be less lonely?\n",
    "STS-B/train.tsv": f"{STSB_HEAD}\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n",
    "STS-B/dev.tsv": f"{STSB_HEAD}\tscore\n0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t2.500\n",
    "STS-B/test.tsv": f"{STSB_HEAD}\n0\tmain-news\theadlines\t2016\t0000\tnone\tnone\tA cat sleeps.\tA dog barks.\n",
    "MNLI/train.tsv": f"{MNLI_HEAD}\tlabel1\tgold_label\n0\t31193\t31193n\tgovernment\t{MNLI_PARSES}\t{PREMISE}\t{HYPOTHESIS}\tneutral\tneutral\n",
    "MNLI/dev_matched.tsv": f"{MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n0\t63735\t63735n\tslate\t{MNLI_PARSES}\tThe new rights are nice enough\tEveryone really likes the newest benefits \tneutral\tneutral\tneutral\tneutral\tneutral\tneutral\n",
    "MNLI/dev_mismatched.tsv": f"{MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n0\t75290\t75290c\tletters\t{MNLI_PARSES}\tYour contribution helped make it possible.\tYour contributions were of no help.\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n",
    "MNLI/test_matched.tsv": f"{MNLI_HEAD}\n0\t31493\t31493\ttravel\t{MNLI_PARSES}\tHierbas is a liqueur.\tHierbas is a drink.\n",
    "MNLI/test_mismatched.tsv": f"{MNLI_HEAD}\n0\t1\t1\tfiction\t{MNLI_PARSES}\tWhat have you decided?\tYou decided.\n",
    "QNLI/dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat came into force after the new constitution was herald?\tAs of that day, the new constitution heralding the Second Republic came into force.\tentailment\n",
    "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44.\tChristopher Reeve had an accident.\tnot_entailment\n",
    "WNLI/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0\n",
    "diagnostic/diagnostic.tsv": "index\tsentence1\tsentence2\n0\tThe cat sat on the mat.\tThe cat did not sit on the mat.\n",
}  # fmt: skip

# (config, split, file, the TFDS-shaped records it holds, T5 inputs without the task word,
# task word, target of the first record).
CASES = [
    ("cola", "train", "CoLA/train.tsv",
     [{"sentence": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1, "idx": 0},
      {"sentence": "They drank the pub.", "label": 0, "idx": 1}],
     "sentence: Our friends won't buy this analysis, let alone the next one we propose.", "cola", "acceptable"),
    ("cola", "test", "CoLA/test.tsv", [{"sentence": "Bill whistled past the house.", "label": -1, "idx": 0}],
     "sentence: Bill whistled past the house.", "cola", "<unk>"),
    ("sst2", "validation", "SST-2/dev.tsv",
     [{"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 0}],
     "sentence: it 's a charming and often affecting journey . ", "sst2", "positive"),
    ("mrpc", "validation", "MRPC/dev.tsv", [{"sentence1": "He left .", "sentence2": "She stayed .", "label": 0, "idx": 0}],
     "sentence1: He left . sentence2: She stayed .", "mrpc", "not_equivalent"),
    ("mrpc", "train", "MRPC/train.tsv", [{"sentence1": AMROZI, "sentence2": REFERRING, "label": 1, "idx": 0}],
     f"sentence1: {AMROZI} sentence2: {REFERRING}", "mrpc", "equivalent"),
    ("mrpc", "test", "MRPC/test.tsv",
     [{"sentence1": "PCCW 's chief operating officer resigned .", "sentence2": "The officer left PCCW .", "label": -1, "idx": 0}],
     "sentence1: PCCW 's chief operating officer resigned . sentence2: The officer left PCCW .", "mrpc", "<unk>"),
    ("qqp", "validation", "QQP/dev.tsv",
     [{"question1": "How do I learn Python?", "question2": "What is the best way to learn Python?", "label": 1, "idx": 0}],
     "question1: How do I learn Python? question2: What is the best way to learn Python?", "qqp", "duplicate"),
    ("stsb", "validation", "STS-B/dev.tsv",
     [{"sentence1": "A man with a hard hat is dancing.", "sentence2": "A man wearing a hard hat is dancing.", "label": 2.5, "idx": 0}],
     "sentence1: A man with a hard hat is dancing. sentence2: A man wearing a hard hat is dancing.", "stsb", "2.4"),
    ("stsb", "test", "STS-B/test.tsv",
     [{"sentence1": "A cat sleeps.", "sentence2": "A dog barks.", "label": -1.0, "idx": 0}],
     "sentence1: A cat sleeps. sentence2: A dog barks.", "stsb", "-1.0"),
    ("mnli", "train", "MNLI/train.tsv", [{"premise": PREMISE, "hypothesis": HYPOTHESIS, "label": 1, "idx": 0}],
     f"hypothesis: {HYPOTHESIS} premise: {PREMISE}", "mnli", "neutral"),
    ("mnli_matched", "validation", "MNLI/dev_matched.tsv",
     [{"premise": "The new rights are nice enough", "hypothesis": "Everyone really likes the newest benefits ", "label": 1, "idx": 0}],
     "hypothesis: Everyone really likes the newest benefits  premise: The new rights are nice enough", "mnli", "neutral"),
    ("mnli_mismatched", "validation", "MNLI/dev_mismatched.tsv",
     [{"premise": "Your contribution helped make it possible.", "hypothesis": "Your contributions were of no help.", "label": 2, "idx": 0}],
     "hypothesis: Your contributions were of no help. premise: Your contribution helped make it possible.", "mnli", "contradiction"),
    ("qnli", "validation", "QNLI/dev.tsv",
     [{"question": "What came into force after the new constitution was herald?",
       "sentence": "As of that day, the new constitution heralding the Second Republic came into force.", "label": 0, "idx": 0}],
     "question: What came into force after the new constitution was herald? sentence: As of that day, the new constitution heralding the Second Republic came into force.",
     "qnli", "entailment"),
    ("rte", "validation", "RTE/dev.tsv",
     [{"sentence1": "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44.",
       "sentence2": "Christopher Reeve had an accident.", "label": 1, "idx": 0}],
     "sentence1: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44. sentence2: Christopher Reeve had an accident.",
     "rte", "not_entailment"),
    ("wnli", "validation", "WNLI/dev.tsv",
     [{"sentence1": "The drain is clogged with hair. It has to be cleaned.", "sentence2": "The hair has to be cleaned.", "label": 0, "idx": 0}],
     "sentence1: The drain is clogged with hair. It has to be cleaned. sentence2: The hair has to be cleaned.", "wnli", "not_entailment"),
    ("ax", "test", "diagnostic/diagnostic.tsv",
     [{"premise": "The cat sat on the mat.", "hypothesis": "The cat did not sit on the mat.", "label": -1, "idx": 0}],
     "hypothesis: The cat did not sit on the mat. premise: The cat sat on the mat.", "mnli", "<unk>"),
]  # fmt: skip

# The first labelled case of each config (the diagnostic has none), for test_tasks_all.py:
# config -> (record, split, inputs without the task word, target, task word).
BASES = {}
for _config, _split, _, _records, _text, _word, _target in CASES:
    if _config == "ax" or not _split.startswith("test"):
        BASES.setdefault(_config, (_records[0], _split, _text, _target, _word))
