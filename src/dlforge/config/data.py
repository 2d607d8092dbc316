"""The data side of the run schema: where the rows come from and how they are cleaned
(``data:``), the input columns (``inputs:``), a forecasting run's series (``forecast:``) and the
output column (``output:``)."""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

from pydantic import Field, model_validator

from dlforge.config._base import _Strict

__all__ = [
    "INPUT_CONFIGS",
    "INPUT_KINDS",
    "TABULAR_KINDS",
    "AudioAugment",
    "AudioInput",
    "CategoryInput",
    "CleanConfig",
    "DataConfig",
    "ForecastConfig",
    "ImageAugment",
    "ImageInput",
    "InputConfig",
    "NumericInput",
    "OutputConfig",
    "SeriesAugment",
    "SequenceInput",
    "TextAugment",
    "TextInput",
]

TABULAR_KINDS = ("numeric", "category")


# ---------------------------------------------------------------------------------------- data
class CleanConfig(_Strict):
    """Cleaning steps applied to the text column before anything else; each one is counted."""

    html: bool = True  # unescape HTML entities, strip tags
    unicode_nfkc: bool = True  # Unicode NFKC normalisation
    whitespace: bool = True  # collapse runs of whitespace, strip the ends
    drop_empty: bool = True  # drop rows whose text is empty after the steps above
    drop_duplicates: bool = True  # drop exact duplicate (text, label) rows
    drop_missing_label: bool = True  # drop rows with no label; false makes them an error
    # replace e-mails, phone numbers, card numbers (Luhn-checked), IP addresses and URLs in
    # text inputs by <EMAIL>, <PHONE>, ... (counted; the originals are never kept)
    pii: bool = False
    pii_region: str = "US"  # the country of phone numbers written without +country code

    @model_validator(mode="after")
    def _known_region(self) -> CleanConfig:
        if self.pii:
            import phonenumbers

            if self.pii_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"pii_region: {self.pii_region!r} is not a region code such "
                                 "as US, GB, DE, IN (ISO 3166-1 alpha-2)")
        return self


class DataConfig(_Strict):
    path: str | None = None  # CSV, TSV, JSONL or Parquet; None when data comes from Python
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    # 0: no validation rows (train the configured epochs on everything, keep the last weights)
    validation_split: float = Field(0.1, ge=0.0, lt=1.0)
    test_split: float = Field(0.0, ge=0.0, lt=1.0)  # held out, scored once after training
    seed: int = 0
    clean: CleanConfig = Field(default_factory=CleanConfig)

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> DataConfig:
        if self.validation_split + self.test_split >= 0.9:
            raise ValueError("validation_split + test_split must leave at least 10% for training")
        return self


# -------------------------------------------------------------------------------------- inputs
class TextAugment(_Strict):
    """Training-split augmentation of token ids; each a rate, 0 turns it off."""

    delete: float = Field(0.0, ge=0.0, lt=1.0)  # drop each token with this probability
    swap: float = Field(0.0, ge=0.0, lt=1.0)  # swap rate x length random pairs of tokens
    mask: float = Field(0.0, ge=0.0, lt=1.0)  # replace each token by [MASK] with this probability


class TextInput(_Strict):
    name: str  # the column holding the text
    type: Literal["text"] = "text"
    tokenizer: Literal["bpe", "wordpiece"] = "bpe"
    vocab_size: int = Field(10_000, ge=50, le=1_000_000)
    max_length: int = Field(128, ge=2, le=100_000)
    lowercase: bool = True
    min_frequency: int = Field(2, ge=1)
    augment: TextAugment = Field(default_factory=TextAugment)

    @model_validator(mode="after")
    def _bpe_needs_room_for_merges(self) -> TextInput:
        # Byte-level BPE starts from 256 byte symbols + 5 special tokens; below that it can
        # learn no merge and every text becomes single bytes.
        if self.tokenizer == "bpe" and self.vocab_size < 300:
            raise ValueError(f"vocab_size {self.vocab_size} is too small for the byte-level BPE "
                             "tokenizer (256 byte symbols come first); use at least 300, or "
                             "tokenizer: wordpiece")
        return self


class ImageAugment(_Strict):
    """Training-split augmentation of images; each 0 turns it off."""

    crop: int = Field(0, ge=0)  # pad by this many pixels, crop back at a random offset
    flip: float = Field(0.0, ge=0.0, le=1.0)  # probability of a horizontal flip
    rotate: float = Field(0.0, ge=0.0, le=180.0)  # max degrees either way
    noise: float = Field(0.0, ge=0.0)  # std of Gaussian noise (in normalised units)


class ImageInput(_Strict):
    """A column of images (file paths or arrays), or a folder of class sub-folders."""

    name: str
    type: Literal["image"]
    # (height, width) to resize to; None: every image must have the same size
    size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = None
    color: Literal["auto", "gray", "rgb"] = "auto"  # auto: gray stays gray, colour is RGB
    augment: ImageAugment = Field(default_factory=ImageAugment)


class AudioAugment(_Strict):
    """Training-split augmentation of audio clips; each 0 turns it off."""

    shift: float = Field(0.0, ge=0.0)  # shift each clip by up to this many seconds either way
    noise: float = Field(0.0, ge=0.0)  # white noise of up to this fraction of the clip's RMS
    time_mask: int = Field(0, ge=0)  # SpecAugment: mask up to this many frames, `masks` times
    freq_mask: int = Field(0, ge=0)  # SpecAugment: mask up to this many mel bands, `masks` times
    masks: int = Field(2, ge=1)  # how many time masks and how many frequency masks


class AudioInput(_Strict):
    """A column of audio clips (WAV, FLAC, OGG or MP3 paths, file bytes, or waveforms), or a
    folder of class sub-folders: mono, resampled to ``sample_rate``, centred in a window of
    ``seconds`` (cropped or padded with silence), as a log-mel spectrogram standardised per
    mel band with the training split's statistics."""

    name: str
    type: Literal["audio"]
    sample_rate: int = Field(16_000, ge=1_000, le=192_000)  # Hz; every clip is resampled to it
    seconds: float = Field(1.0, gt=0.0, le=60.0)  # the window every clip is cropped/padded to
    n_mels: int = Field(40, ge=2, le=512)  # mel bands
    # STFT window and hop in samples: 40 ms and 20 ms at 16 kHz, the keyword-spotting front
    # end of "Hello Edge" (Zhang et al., 2017): 51 frames a second
    n_fft: int = Field(640, ge=16)
    hop_length: int = Field(320, ge=1)
    augment: AudioAugment = Field(default_factory=AudioAugment)

    @model_validator(mode="after")
    def _window_fits(self) -> AudioInput:
        samples = round(self.seconds * self.sample_rate)
        if self.n_fft > samples:
            raise ValueError(f"n_fft: {self.n_fft} samples is longer than the clip window "
                             f"({self.seconds:g} s at {self.sample_rate} Hz = {samples} "
                             "samples); lower n_fft or raise seconds")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length: {self.hop_length} is more than n_fft "
                             f"({self.n_fft}); frames would skip samples")
        return self


class SeriesAugment(_Strict):
    """Training-split augmentation of numeric sequences (in standardised units); 0 is off."""

    jitter: float = Field(0.0, ge=0.0)  # std of Gaussian noise added to every value
    scaling: float = Field(0.0, ge=0.0)  # std of a random factor around 1, one per sequence
    slice: float = Field(0.0, ge=0.0, lt=1.0)  # crop up to this fraction, stretch back


class SequenceInput(_Strict):
    """A column whose every value is a sequence of numbers (a list, an array (T, F), or a
    string such as "0.1 0.4 0.2"): standardised per channel, padded per batch."""

    name: str
    type: Literal["sequence"]
    max_length: int = Field(512, ge=2)  # longer sequences keep their last max_length steps
    augment: SeriesAugment = Field(default_factory=SeriesAugment)


class NumericInput(_Strict):
    """A numeric column: standardised on the training split; missing values become the mean,
    with a 0/1 indicator beside them."""

    name: str
    type: Literal["numeric"]


class CategoryInput(_Strict):
    """A categorical column: each value seen in training (at least ``min_count`` times) gets
    an embedding; unseen or missing values share one "unknown" embedding."""

    name: str
    type: Literal["category"]
    embedding_dim: int | None = Field(None, ge=1)  # None: min(32, (categories + 1) // 2 + 1)
    min_count: int = Field(1, ge=1)


# Every input kind's config class; its ``type`` is the kind's name.
INPUT_CONFIGS: tuple[type[_Strict], ...] = (TextInput, ImageInput, NumericInput, CategoryInput,
                                            SequenceInput, AudioInput)
InputConfig = Annotated[Union[INPUT_CONFIGS], Field(discriminator="type")]  # noqa: UP007
INPUT_KINDS: tuple[str, ...] = tuple(get_args(c.model_fields["type"].annotation)[0]
                                     for c in INPUT_CONFIGS)


class ForecastConfig(_Strict):
    """Forecast ``targets`` ``horizon`` steps ahead from a ``window`` of past values. The data
    is one table in time order (a row per step); splits are chronological."""

    targets: list[str] = Field(min_length=1)  # the series to forecast
    time: str | None = None  # a time column: must be sorted, without duplicates
    covariates: list[str] = Field(default_factory=list)  # other series, past values as inputs
    exogenous: list[str] = Field(default_factory=list)  # known ahead: also their future values
    window: int = Field(24, ge=1)
    horizon: int = Field(1, ge=1)
    season: int | None = Field(None, ge=1)  # seasonal-naive period; None: from the time column
    # window: each window is also scaled by its own mean and std (as RevIN, Kim et al. 2022),
    # so trends and levels outside the training range forecast well; global: training scaling
    normalize: Literal["window", "global"] = "window"
    augment: SeriesAugment = Field(default_factory=SeriesAugment)

    @model_validator(mode="after")
    def _columns_once(self) -> ForecastConfig:
        cols = [*self.targets, *self.covariates, *self.exogenous,
                *([self.time] if self.time else [])]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"column {dup[0]!r} is listed twice (targets, covariates, "
                             "exogenous and time must be different columns)")
        for name in ("scaling", "slice"):
            if getattr(self.augment, name):
                raise ValueError(f"forecast.augment.{name}: would change the window but not the "
                                 "steps that follow it, so the target no longer fits; for "
                                 "forecasting use augment.jitter")
        return self


class OutputConfig(_Strict):
    name: str  # the column holding the label (or the number, for regression)
    # auto: numeric for a column of non-integer numbers, else binary / category / multilabel
    type: Literal["auto", "binary", "category", "multilabel", "numeric"] = "auto"
    separator: str = "|"  # splits a multi-label string such as "sports|politics"
    # Binary: a row is the second class when its probability is at least this. auto: chosen
    # on the validation split for the monitored metric (0.5 where that is a tie); the run's
    # config.yaml holds the number used, and predict and serve apply it.
    threshold: float | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _threshold_in_range(self) -> OutputConfig:
        if self.threshold != "auto" and not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold: expected a probability between 0 and 1 (exclusive) "
                             f"or auto, got {self.threshold}")
        return self
