"""The JSON schemas of the OpenAPI document: request bodies, answers and each API's error shape.

They describe the wire; they do not parse it (the protocol modules do, and say more in their
errors). Unknown keys are allowed everywhere, as the parsers ignore them with a warning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMAS", "ref"]

_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}
_NULLABLE_STR = {"type": ["string", "null"]}
_SIZE = {
    "type": "object",
    "required": ["width", "height"],
    "properties": {"width": _INT, "height": _INT},
}

_GENERATION_PARAMETERS: dict[str, Any] = {
    "negative_prompt": {"anyOf": [_STR, {"type": "array", "items": _STR}, {"type": "null"}]},
    "width": {"type": ["integer", "number", "null"]},
    "height": {"type": ["integer", "number", "null"]},
    "num_inference_steps": {"type": ["integer", "number", "null"]},
    "guidance_scale": {"type": ["number", "null"]},
    "scheduler": _NULLABLE_STR,
    "seed": {"type": ["integer", "null"]},
    "true_cfg_scale": {"type": ["number", "null"]},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, dict[str, Any]] = {
    # --- HF
    "TextToImageRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": {"type": "string", "minLength": 1, "description": "the prompt"},
            "parameters": {
                "type": ["object", "null"],
                "properties": {
                    **_GENERATION_PARAMETERS,
                    "target_size": {
                        "type": ["object", "null"],
                        "properties": {"width": _INT, "height": _INT},
                    },
                },
            },
            "options": {
                "type": ["object", "null"],
                "properties": {"use_cache": _BOOL, "wait_for_model": _BOOL},
            },
        },
    },
    "HFError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": _STR, "estimated_time": _NUM},
    },
    "ModelStatus": {
        "type": "object",
        "required": ["model_id", "task", "state", "loaded"],
        "properties": {"model_id": _STR, "task": _STR, "state": _STR, "loaded": _BOOL},
    },
    "ModelInfo": {
        "type": "object",
        "required": ["model_id", "family", "defaults", "limits", "schedulers", "size_presets"],
        "properties": {
            "model_id": _STR,
            "family": _STR,
            "defaults": _OBJ,
            "limits": _OBJ,
            "schedulers": {"type": "array", "items": _STR},
            "size_presets": {"type": "array", "items": _SIZE},
            "render_size": {
                "anyOf": [_SIZE, {"type": "null"}],
                "description": "the model always draws at this size and scales to the one asked",
            },
        },
    },
    "ModelCatalog": {
        "type": "object",
        "required": ["default_model", "models"],
        "properties": {
            "default_model": _STR,
            "models": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["model_id", "state", "sources"],
                    "properties": {
                        "model_id": _STR,
                        "state": {"enum": ["unloaded", "loading", "ready", "failed"]},
                        "sources": {"type": "array", "items": _STR},
                        "queued": _INT,
                        "error": _STR,
                    },
                },
            },
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": _STR}},
    # --- jobs (Replicate)
    "PredictionRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "version": _STR,
            "input": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string", "minLength": 1},
                    **_GENERATION_PARAMETERS,
                    "output_format": {"enum": ["png", "jpg", "jpeg", "webp"]},
                    "num_outputs": _INT,
                },
            },
            "webhook": _NULLABLE_STR,
            "webhook_events_filter": {"type": "array", "items": _STR},
            "previews": _BOOL,
            "stream": _BOOL,
        },
    },
    "Prediction": {
        "type": "object",
        "required": ["id", "model", "version", "input", "status", "urls"],
        "properties": {
            "id": _STR,
            "model": _STR,
            "version": _STR,
            "input": _OBJ,
            "status": {"enum": ["starting", "processing", "succeeded", "failed", "canceled"]},
            "urls": _OBJ,
        },
    },
    "PredictionPage": {
        "type": "object",
        "required": ["results", "next", "previous"],
        "properties": {
            "results": {"type": "array", "items": ref("Prediction")},
            "next": _NULLABLE_STR,
            "previous": _NULLABLE_STR,
        },
    },
    "Problem": {
        "type": "object",
        "required": ["title", "detail", "status", "code"],
        "properties": {"title": _STR, "detail": _STR, "status": _INT, "code": _STR},
    },
    # --- OpenAI
    "ImagesRequest": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "model": _NULLABLE_STR,
            "n": {"type": ["integer", "null"], "minimum": 1},
            "size": _NULLABLE_STR,
            "quality": {"enum": ["auto", "low", "medium", "high", "standard", "hd", None]},
            "response_format": {"enum": ["url", "b64_json", None]},
            "output_format": {"enum": ["png", "jpeg", "jpg", "webp", None]},
            "output_compression": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
            "background": {"enum": ["auto", "opaque", "transparent", None]},
            "stream": {"type": ["boolean", "null"]},
            "partial_images": {"type": ["integer", "null"], "minimum": 0, "maximum": 3},
            "user": _NULLABLE_STR,
            **{k: v for k, v in _GENERATION_PARAMETERS.items() if k != "true_cfg_scale"},
        },
    },
    "ImagesResponse": {
        "type": "object",
        "required": ["created", "data"],
        "properties": {
            "created": _INT,
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"url": _STR, "b64_json": _STR, "revised_prompt": {}},
                },
            },
            "size": _STR,
            "output_format": _STR,
            "quality": _STR,
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": _STR, "data": {"type": "array", "items": _OBJ}},
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": _STR,
                    "type": _STR,
                    "param": _NULLABLE_STR,
                    "code": _NULLABLE_STR,
                },
            }
        },
    },
    # --- A1111
    "Txt2ImgRequest": {
        "type": "object",
        "properties": {
            "prompt": _STR,
            "negative_prompt": _NULLABLE_STR,
            "width": {"type": ["integer", "null"]},
            "height": {"type": ["integer", "null"]},
            "steps": {"type": ["integer", "null"]},
            "cfg_scale": {"type": ["number", "null"]},
            "seed": {"type": ["integer", "null"]},
            "sampler_name": _NULLABLE_STR,
            "scheduler": _NULLABLE_STR,
            "batch_size": {"type": ["integer", "null"]},
            "n_iter": {"type": ["integer", "null"]},
            "send_images": {"type": ["boolean", "null"]},
            "override_settings": {"type": ["object", "null"]},
        },
    },
    "Txt2ImgResponse": {
        "type": "object",
        "required": ["images", "parameters", "info"],
        "properties": {
            "images": {"type": "array", "items": _STR},
            "parameters": _OBJ,
            "info": {"type": "string", "description": "a JSON document, encoded as a string"},
        },
    },
    "A1111Options": {"type": "object", "properties": {"sd_model_checkpoint": _STR}},
    "A1111List": {"type": "array", "items": _OBJ},
    "A1111Progress": {
        "type": "object",
        "required": ["progress", "eta_relative", "state", "current_image"],
        "properties": {
            "progress": _NUM,
            "eta_relative": _NUM,
            "state": _OBJ,
            "current_image": _NULLABLE_STR,
        },
    },
    "A1111Error": {
        "type": "object",
        "required": ["error", "detail", "code"],
        "properties": {"error": _STR, "detail": _STR, "code": _STR, "field": _NULLABLE_STR},
    },
}
