"""Discord's size rules and error shapes, so that bugs in the bot surface as the real API errors."""

from __future__ import annotations

import re
import struct
from typing import Any

from .model import Json, MessageFlag

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_ATTACHMENTS = 10
MAX_THREAD_NAME = 100

_EMBED_TEXT_LIMITS: dict[str, int] = {"title": 256, "description": 4096}
_URL_PREFIXES = ("http://", "https://", "attachment://")
_COMMAND_NAME = re.compile(r"^[-_'\w\u0900-\u097F\u0E00-\u0E7F]{1,32}$")


class ApiError(Exception):
    """An error response as Discord sends it: HTTP status, JSON error code, message, optional `errors` tree."""

    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> Json:
        body: Json = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


# The errors used by the emulator, named after Discord's JSON error codes.
def unauthorized() -> ApiError:
    return ApiError(401, 0, "401: Unauthorized")


def missing_access() -> ApiError:
    return ApiError(403, 50001, "Missing Access")


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")


def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def unknown_guild() -> ApiError:
    return ApiError(404, 10004, "Unknown Guild")


def unknown_member() -> ApiError:
    return ApiError(404, 10007, "Unknown Member")


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def unknown_user() -> ApiError:
    return ApiError(404, 10013, "Unknown User")


def unknown_webhook() -> ApiError:
    return ApiError(404, 10015, "Unknown Webhook")


def unknown_interaction() -> ApiError:
    return ApiError(404, 10062, "Unknown interaction")


def unknown_command() -> ApiError:
    return ApiError(404, 10063, "Unknown application command")


def invalid_webhook_token() -> ApiError:
    return ApiError(401, 50027, "Invalid Webhook Token")


def already_acknowledged() -> ApiError:
    return ApiError(400, 40060, "Interaction has already been acknowledged.")


def too_large() -> ApiError:
    return ApiError(413, 40005, "Request entity too large")


def empty_message() -> ApiError:
    return ApiError(400, 50006, "Cannot send an empty message")


def not_author() -> ApiError:
    return ApiError(403, 50005, "Cannot edit a message authored by another user")


def wrong_channel_type() -> ApiError:
    return ApiError(400, 50024, "Cannot execute action on this channel type")


def thread_exists() -> ApiError:
    return ApiError(400, 160004, "A thread has already been created for this message")


def archived_thread() -> ApiError:
    return ApiError(400, 50083, "Operation cannot be performed on an archived thread")


class FormErrors:
    """Collects field errors into Discord's nested `errors` object (code 50035, Invalid Form Body)."""

    def __init__(self) -> None:
        self.tree: Json = {}

    def add(self, path: tuple[str | int, ...], code: str, message: str) -> None:
        node = self.tree
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: tuple[str | int, ...], limit: int) -> None:
        self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def __bool__(self) -> bool:
        return bool(self.tree)

    def error(self, prefix: tuple[str, ...] = ()) -> ApiError:
        tree = self.tree
        for part in reversed(prefix):
            tree = {part: tree}
        return ApiError(400, 50035, "Invalid Form Body", tree)

    def raise_if_any(self, prefix: tuple[str, ...] = ()) -> None:
        if self.tree:
            raise self.error(prefix)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _check_url(errors: FormErrors, path: tuple[str | int, ...], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.startswith(_URL_PREFIXES):
        errors.add(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")


def check_embeds(errors: FormErrors, embeds: Any) -> None:
    if not isinstance(embeds, list):
        errors.add(("embeds",), "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return
    if len(embeds) > MAX_EMBEDS:
        errors.max_length(("embeds",), MAX_EMBEDS)
    total = 0
    for index, embed in enumerate(embeds):
        path: tuple[str | int, ...] = ("embeds", index)
        if not isinstance(embed, dict):
            errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            continue
        for key, limit in _EMBED_TEXT_LIMITS.items():
            text = _text(embed.get(key))
            total += len(text)
            if len(text) > limit:
                errors.max_length((*path, key), limit)
        _check_url(errors, (*path, "url"), embed.get("url"))
        for key in ("image", "thumbnail"):
            part = embed.get(key)
            if isinstance(part, dict):
                _check_url(errors, (*path, key, "url"), part.get("url"))
        footer = embed.get("footer")
        if isinstance(footer, dict):
            text = _text(footer.get("text"))
            total += len(text)
            if len(text) > 2048:
                errors.max_length((*path, "footer", "text"), 2048)
        author = embed.get("author")
        if isinstance(author, dict):
            text = _text(author.get("name"))
            total += len(text)
            if len(text) > 256:
                errors.max_length((*path, "author", "name"), 256)
        fields = embed.get("fields") or []
        if isinstance(fields, list):
            if len(fields) > 25:
                errors.max_length((*path, "fields"), 25)
            for f_index, item in enumerate(fields):
                if not isinstance(item, dict):
                    continue
                for key, limit in (("name", 256), ("value", 1024)):
                    text = _text(item.get(key))
                    total += len(text)
                    if not text:
                        errors.add((*path, "fields", f_index, key), "BASE_TYPE_REQUIRED", "This field is required")
                    elif len(text) > limit:
                        errors.max_length((*path, "fields", f_index, key), limit)
        colour = embed.get("color")
        if colour is not None and (not isinstance(colour, int) or not 0 <= colour <= 0xFFFFFF):
            errors.add((*path, "color"), "NUMBER_TYPE_MAX", "int value should be less than or equal to 16777215.")
    if total > MAX_EMBED_TOTAL:
        errors.add(("embeds",), "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}")


def check_components(errors: FormErrors, components: Any, flags: int) -> None:
    if not isinstance(components, list):
        errors.add(("components",), "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return
    v2 = bool(flags & MessageFlag.IS_COMPONENTS_V2)
    if not v2 and len(components) > 5:
        errors.max_length(("components",), 5)
    seen: set[str] = set()

    def walk(items: list[Any], path: tuple[str | int, ...]) -> None:
        for index, item in enumerate(items):
            here = (*path, index)
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == 1:
                children = item.get("components") or []
                if not children:
                    errors.add((*here, "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
                elif len(children) > 5:
                    errors.max_length((*here, "components"), 5)
            if kind == 2:
                style = item.get("style")
                if style == 5:
                    if not item.get("url"):
                        errors.add((*here, "url"), "BASE_TYPE_REQUIRED", "This field is required")
                elif style != 6 and not item.get("custom_id"):
                    errors.add((*here, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
                if len(_text(item.get("label"))) > 80:
                    errors.max_length((*here, "label"), 80)
            if kind in (3, 5, 6, 7, 8) and len(item.get("options") or []) > 25:
                errors.max_length((*here, "options"), 25)
            custom_id = item.get("custom_id")
            if isinstance(custom_id, str):
                if len(custom_id) > 100:
                    errors.max_length((*here, "custom_id"), 100)
                if custom_id in seen:
                    errors.add(
                        (*here, "custom_id"),
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                seen.add(custom_id)
            children = item.get("components")
            if isinstance(children, list):
                walk(children, (*here, "components"))
            accessory = item.get("accessory")
            if isinstance(accessory, dict):
                walk([accessory], (*here, "accessory"))

    walk(components, ("components",))


def check_message(payload: Json, file_count: int, *, creating: bool, prefix: tuple[str, ...] = ()) -> None:
    """Raise the ApiError Discord would return for this create/edit message payload, if any."""
    errors = FormErrors()
    content = payload.get("content")
    if content is not None:
        if not isinstance(content, str):
            errors.add(("content",), "STRING_TYPE_CONVERT", "Could not interpret value as string.")
        elif len(content) > MAX_CONTENT:
            errors.max_length(("content",), MAX_CONTENT)
    if payload.get("embeds") is not None:
        check_embeds(errors, payload["embeds"])
    flags = payload.get("flags") or 0
    if payload.get("components") is not None:
        check_components(errors, payload["components"], flags if isinstance(flags, int) else 0)
    attachments = payload.get("attachments")
    count = max(file_count, len(attachments) if isinstance(attachments, list) else 0)
    if count > MAX_ATTACHMENTS:
        errors.max_length(("attachments",), MAX_ATTACHMENTS)
    errors.raise_if_any(prefix)
    if creating and not (
        content
        or payload.get("embeds")
        or payload.get("components")
        or file_count
        or payload.get("sticker_ids")
        or payload.get("poll")
    ):
        raise empty_message()


def check_thread_name(name: Any) -> None:
    errors = FormErrors()
    if not isinstance(name, str) or not name.strip():
        errors.add(("name",), "BASE_TYPE_REQUIRED", "This field is required")
    elif len(name) > MAX_THREAD_NAME:
        errors.add(("name",), "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_THREAD_NAME} in length.")
    errors.raise_if_any()


def _check_command_options(errors: FormErrors, options: Any, path: tuple[str | int, ...], depth: int) -> None:
    if not isinstance(options, list):
        return
    if len(options) > 25:
        errors.max_length(path, 25)
    names: set[str] = set()
    seen_optional = False
    for index, option in enumerate(options):
        here = (*path, index)
        if not isinstance(option, dict):
            continue
        name = option.get("name")
        if not isinstance(name, str) or not _COMMAND_NAME.match(name) or name != name.lower():
            errors.add((*here, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        elif name in names:
            errors.add((*here, "name"), "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Option name already exists")
        else:
            names.add(name)
        description = _text(option.get("description"))
        if not 1 <= len(description) <= 100:
            errors.add((*here, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        kind = option.get("type")
        if kind in (1, 2):
            if depth >= 2 or (kind == 2 and depth >= 1):
                errors.add((*here, "type"), "APPLICATION_COMMAND_OPTION_TYPE_INVALID", "Subcommands nest too deep")
            _check_command_options(errors, option.get("options"), (*here, "options"), depth + 1)
            continue
        required = bool(option.get("required"))
        if required and seen_optional:
            errors.add(
                (*here, "required"),
                "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                "Required options must be placed before non-required options",
            )
        seen_optional = seen_optional or not required
        choices = option.get("choices")
        if isinstance(choices, list):
            if len(choices) > 25:
                errors.max_length((*here, "choices"), 25)
            for c_index, choice in enumerate(choices):
                if isinstance(choice, dict) and not 1 <= len(_text(choice.get("name"))) <= 100:
                    errors.add(
                        (*here, "choices", c_index, "name"),
                        "BASE_TYPE_BAD_LENGTH",
                        "Must be between 1 and 100 in length.",
                    )


def check_command(errors: FormErrors, command: Any, path: tuple[str | int, ...]) -> None:
    if not isinstance(command, dict):
        errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return
    kind = command.get("type", 1)
    name = command.get("name")
    if kind == 1:
        if not isinstance(name, str) or not _COMMAND_NAME.match(name) or name != name.lower():
            errors.add((*path, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if not 1 <= len(_text(command.get("description"))) <= 100:
            errors.add((*path, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        _check_command_options(errors, command.get("options"), (*path, "options"), 0)
    else:
        # User and message commands: free-text names of 1-32 characters (localised names alike) and an empty
        # description (https://discord.com/developers/docs/interactions/application-commands#message-commands).
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            errors.add((*path, "name"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        localized = command.get("name_localizations") or {}
        for locale, text in localized.items() if isinstance(localized, dict) else []:
            if not isinstance(text, str) or not 1 <= len(text) <= 32:
                errors.add(
                    (*path, "name_localizations", locale), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length."
                )
        if command.get("description"):
            errors.add((*path, "description"), "APPLICATION_COMMAND_INVALID_DESCRIPTION", "Must be empty")


# Modal limits, from the MODAL response (https://discord.com/developers/docs/interactions/receiving-and-responding
# #interaction-response-object-modal: custom_id <= 100, title <= 45, 1-5 components), the Label component and the
# text input (https://discord.com/developers/docs/components/reference#label, #text-input: label <= 45,
# description <= 100, placeholder <= 100, min_length 0-4000, max_length 1-4000, value <= 4000).
MODAL_TITLE_MAX = 45
MODAL_COMPONENTS_MAX = 5
LABEL_TEXT_MAX = 45
LABEL_DESCRIPTION_MAX = 100
TEXT_INPUT_VALUE_MAX = 4000
PLACEHOLDER_MAX = 100
# What a Label may wrap in a modal (text input, the selects, file upload; radio/checkbox groups 21-23 of
# discord.py 2.7 are accepted as they are).
_LABEL_CHILDREN = frozenset({3, 4, 5, 6, 7, 8, 19, 21, 22, 23})


def _check_length(
    errors: FormErrors, path: tuple[str | int, ...], value: Any, low: int, high: int, *, required: bool
) -> None:
    if value is None:
        if required:
            errors.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        return
    if not isinstance(value, str):
        errors.add(path, "STRING_TYPE_CONVERT", "Could not interpret value as string.")
    elif not low <= len(value) <= high:
        errors.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def _check_text_input(errors: FormErrors, item: Json, path: tuple[str | int, ...], *, in_label: bool) -> None:
    if item.get("style") not in (1, 2):
        errors.add((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2}.")
    if in_label and item.get("label") is not None:
        # Inside a Label the Label carries the text; Discord refuses the deprecated field there.
        errors.add((*path, "label"), "COMPONENT_INVALID_FIELD", "label is not allowed inside a Label component")
    elif not in_label:
        _check_length(errors, (*path, "label"), item.get("label"), 1, LABEL_TEXT_MAX, required=True)
    _check_length(errors, (*path, "placeholder"), item.get("placeholder"), 0, PLACEHOLDER_MAX, required=False)
    _check_length(errors, (*path, "value"), item.get("value"), 0, TEXT_INPUT_VALUE_MAX, required=False)
    low, high = item.get("min_length"), item.get("max_length")
    if low is not None and (not isinstance(low, int) or not 0 <= low <= TEXT_INPUT_VALUE_MAX):
        errors.add((*path, "min_length"), "NUMBER_TYPE_MAX", f"Must be between 0 and {TEXT_INPUT_VALUE_MAX}.")
    if high is not None and (not isinstance(high, int) or not 1 <= high <= TEXT_INPUT_VALUE_MAX):
        errors.add((*path, "max_length"), "NUMBER_TYPE_MAX", f"Must be between 1 and {TEXT_INPUT_VALUE_MAX}.")
    value = item.get("value")
    if isinstance(high, int) and isinstance(value, str) and len(value) > high:
        errors.max_length((*path, "value"), high)


def check_modal(data: Json) -> None:
    """Raise the 50035 error Discord returns for a malformed MODAL response, if any."""
    errors = FormErrors()
    _check_length(errors, ("custom_id",), data.get("custom_id"), 1, 100, required=True)
    _check_length(errors, ("title",), data.get("title"), 1, MODAL_TITLE_MAX, required=True)
    components = data.get("components")
    if not isinstance(components, list) or not 1 <= len(components) <= MODAL_COMPONENTS_MAX:
        errors.add(("components",), "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MODAL_COMPONENTS_MAX} in length.")
        components = components if isinstance(components, list) else []
    seen: set[str] = set()

    def custom_id_of(item: Json, path: tuple[str | int, ...]) -> None:
        custom_id = item.get("custom_id")
        _check_length(errors, (*path, "custom_id"), custom_id, 1, 100, required=True)
        if isinstance(custom_id, str):
            if custom_id in seen:
                errors.add(
                    (*path, "custom_id"), "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
                )
            seen.add(custom_id)

    for index, item in enumerate(components):
        path: tuple[str | int, ...] = ("components", index)
        if not isinstance(item, dict):
            errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            continue
        kind = item.get("type")
        if kind == 18:
            _check_length(errors, (*path, "label"), item.get("label"), 1, LABEL_TEXT_MAX, required=True)
            _check_length(
                errors, (*path, "description"), item.get("description"), 0, LABEL_DESCRIPTION_MAX, required=False
            )
            child = item.get("component")
            if not isinstance(child, dict) or child.get("type") not in _LABEL_CHILDREN:
                errors.add((*path, "component"), "COMPONENT_TYPE_INVALID", "A Label wraps one input component")
                continue
            custom_id_of(child, (*path, "component"))
            if child.get("type") == 4:
                _check_text_input(errors, child, (*path, "component"), in_label=True)
        elif kind == 1:
            # The deprecated form: an action row holding exactly one text input.
            children = item.get("components")
            if not isinstance(children, list) or len(children) != 1 or not isinstance(children[0], dict):
                errors.add((*path, "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 1 in length.")
                continue
            child_path = (*path, "components", 0)
            if children[0].get("type") != 4:
                errors.add(child_path, "COMPONENT_TYPE_INVALID", "Only text inputs may sit in a modal's action row")
                continue
            custom_id_of(children[0], child_path)
            _check_text_input(errors, children[0], child_path, in_label=False)
        elif kind != 10:
            errors.add((*path, "type"), "COMPONENT_TYPE_INVALID", f"Component type {kind} is not allowed in a modal")
    errors.raise_if_any(("data",))


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF, JPEG, WebP or BMP from its header; None for anything else."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
            width, height = struct.unpack(">II", data[16:24])
            return int(width), int(height)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return int(width), int(height)
        if data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return abs(int(width)), abs(int(height))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    end = min(len(data), 1 << 20)
    while index + 9 < end:
        if data[index] != 0xFF:
            index += 1
            continue
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            index += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return int(width), int(height)
        index += 2 + int(length)
    return None
