"""One message catalog, English and Simplified Chinese, for every string a user sees.

`t(locale, key, **params)` picks the language from a Discord locale ("zh-CN", "en-US", ...), falls back
to English, and formats with `str.format`. Tests check both languages have exactly the same keys and
placeholders.
"""

from __future__ import annotations

from typing import Any

EN = "en"
ZH = "zh"

MESSAGES: dict[str, dict[str, str]] = {
    EN: {
        "error.generic": "Something went wrong on our side (reference `{ref}`). Nothing was charged.",
        "error.invalid_input": "That request can't be sent: {detail}",
        "error.invalid_image": "That image can't be used: {detail}",
        "error.quota": "This server's video budget doesn't cover that.",
        "error.queue_full": "You already have {count} videos waiting (limit {limit}). "
        "Wait for one to finish or cancel one.",
        "error.not_allowed": "You can't do that here.",
        "error.rate_limited": "Slow down: you can send another request <t:{retry_ts}:R>.",
        "error.job_not_found": "Job #{job_id} doesn't exist.",
        "error.guild_only": "This command works inside a server only.",
        "input.unknown_model": "Model `{model}` isn't available here.",
        "input.resolution": "`{model}` can't make {resolution} videos. Choose one of: {allowed}.",
        "input.template_model": "`{model}` has no effect templates. Effects need: {models}.",
        "input.template_unknown": "There is no effect called `{template}`. Choose one of: {allowed}.",
        "input.prompt_blank": "The prompt is empty. Describe what should happen between the two frames.",
        "input.prompt_long": "The prompt has {length} characters; the limit is {limit}. Shorten it and try again.",
        "input.negative_long": "The negative prompt has {length} characters; the limit is {limit}. Shorten it.",
        "input.seed": "The seed must be a whole number from 0 to {limit}.",
        "input.frames_gone": "The frames of that job were already removed from storage. Start a new /kf2v.",
        "quota.daily": "This server's daily video budget is nearly used up: ¥{left} of ¥{budget} left today, "
        "and this video costs ¥{cost}. It resets <t:{resets_ts}:R>. Pick a cheaper resolution or wait.",
        "quota.monthly": "This server's monthly video budget is nearly used up: ¥{left} of ¥{budget} left, "
        "and this video costs ¥{cost}. It resets <t:{resets_ts}:R>.",
        "quota.member_daily": "You've reached today's limit of {limit} videos on this server. "
        "It resets <t:{resets_ts}:R>.",
        "quota.channel_not_allowed": "Videos can't be requested in this channel. Use one of: {channels}.",
        "job.not_yours": "That job belongs to someone else.",
        "guild.not_allowed": "This bot is not enabled in this server, so it takes no requests here. "
        "Nothing was charged. Ask the bot's owners if you think this is a mistake.",
        "job.already_final": "That job is already finished ({state}).",
        "job.too_late": "That job is already being generated and can't be stopped any more.",
        "job.canceled": "Cancelled. Nothing was charged.",
        "job.failed.content": "The provider's content check rejected the pictures or the prompt. "
        "Try different frames or wording.",
        "job.failed.invalid": "The provider refused the request as invalid (for example an image it can't read).",
        "job.failed.template_refused": "The video service does not accept the effect `{template}` (its name is "
        "not confirmed by the provider's documentation): try another effect.",
        "job.failed.provider": "The video service had trouble and gave up on this video. Please try again later.",
        "job.failed.expired": "The video service lost track of this task (it expired).",
        "job.failed.account_gone": "The provider account this job was sent with is no longer configured.",
        "job.failed.model_gone": "The model this video was asked for is no longer offered here (the bot's catalog "
        "or region changed). Nothing was charged; please ask again with another model.",
        "job.failed.undeliverable": "The video was made but couldn't be posted here (the channel or thread "
        "is gone or the bot lacks permission).",
        "job.failed.video_lost": "The video was made but its download link had already expired.",
        "job.failed.video_refused": "The video service pointed to a download address outside its own storage, "
        "so the bot did not fetch it. The bot's owners have been told.",
        "job.failed.not_a_video": "The video service sent back a file that is not a video, so nothing was posted. "
        "The bot's owners have been told.",
        "job.failed.lost": "The video service never confirmed this request and it can no longer be traced.",
        "job.failed.unanswered": "The video service did not answer this request after several tries, so it was "
        "not sent again. Nothing was charged; please try again later.",
        "job.failed.internal": "Something went wrong inside the bot while handling this video. "
        "The bot's owners have the details.",
        "state.queued": "Queued",
        "state.submitting": "Sending",
        "state.pending": "Waiting at the provider",
        "state.running": "Generating",
        "state.succeeded": "Finishing",
        "state.delivered": "Done",
        "state.failed": "Failed",
        "state.canceled": "Cancelled",
        "status.title": "Video #{job_id} · {state}",
        "status.effect": "Effect: {template}",
        "status.model": "Model",
        "status.cost": "Cost",
        "status.cost_estimated": "¥{cost} (estimated)",
        "status.cost_settled": "¥{cost}",
        "status.cost_none": "nothing charged",
        "status.requester": "Requested by",
        "status.queue": "Queue",
        "status.position": "Position {position} in the queue.",
        "status.eta": "expected <t:{ts}:R>",
        "status.progress": "Progress",
        "status.elapsed": "Generating for {seconds} s",
        "status.outcome": "Outcome",
        "status.paused": "Paused by the bot's owners ({reason}); your job keeps its place.",
        "status.seed": "Seed {seed}",
        "submit.accepted": "Video #{job_id} is queued. Follow it in {where}.",
        "submit.cannot_post": "I can't post videos in this channel (I need Send Messages, Embed Links and "
        "Attach Files here). Ask a server manager, or use another channel.",
        "result.ready": "{user} your video #{job_id} is ready.",
        "result.link": "{user} your video #{job_id} ({size_mb} MB) is larger than this server allows for "
        "uploads. Download it here: {url} (the link expires <t:{expires_ts}:R>).",
        "result.failed": "{user} video #{job_id} failed: {reason}",
        "result.not_charged": "Nothing was charged for it.",
        "result.cancelled": "{user} video #{job_id} was cancelled.",
        "result.actual_prompt": "Prompt as extended by the model",
        "result.seed": "Seed",
        "result.cost": "Cost",
        "button.cancel": "Cancel",
        "button.regenerate": "Regenerate",
        "button.remix": "Remix",
        "remix.title": "Remix video #{job_id}",
        "remix.linked": "Remixed as video #{job_id}: {where}",
        "modal.prompt": "Prompt",
        "modal.negative_prompt": "Negative prompt (optional)",
        "modal.resolution": "Resolution",
        "modal.duration": "Duration in seconds ({low}-{high})",
        "menu.animate": "Animate with kf2v",
        "animate.title": "Animate these two images",
        "animate.missing": "Animating needs two images in the message as first and last frame; "
        "this one has {found} (needed: {needed}).",
        "animate.not_images": "Not images: {names}.",
        "animate.effect_title": "Animate this image with an effect",
        "modal.effect": "Effect",
        "button.cancelled": "Video #{job_id} was cancelled. Nothing was charged.",
        "button.cancel_requested": "Cancelling video #{job_id} at the provider…",
        "admin.owner_only": "Only the bot's owners can use this command.",
        "alert.video_url_refused": "Job {job_id} (task {task_id}): the provider's video_url was outside its "
        "storage and was not fetched. The provider billed the account for this task; the guild was not charged. "
        "Check DASHSCOPE_BASE_URL and KF2V_VIDEO_URL_HOSTS.",
        "alert.not_a_video": "Job {job_id} (task {task_id}): the provider's video file is not an MP4 and was not "
        "posted. The provider billed the account for this task; the guild was not charged.",
        "alert.bill_clamped": "Job {job_id}: the provider billed {billed} seconds for a fixed-length video; "
        "the guild was charged at most the reservation. Check the bill.",
        "alert.lost_create": "Job {job_id} on account {account}: its create answer was lost and no task could "
        "be proved its within the 24 h task lifetime. It failed and its money was released; check the account's "
        "tasks for one that was billed.",
        "alert.account_gone": "Job {job_id} was sent with account {account}, which is no longer configured: it "
        "failed and its money was released, but its task may still run and be billed. Put a key back in that "
        "place (same variable, same position) to keep in-flight jobs.",
        "alert.creates_unanswered": "Job {job_id} on account {account}: {attempts} creates went unanswered and "
        "none made a task (a slow or broken link to DashScope?). It failed, its money released.",
        "alert.job_crashed": "Job {job_id} failed after repeated internal errors (log reference {ref}); its "
        "money was released.",
        "alert.account_problem": "DashScope account {account} needs attention ({code}): submissions on it "
        "are paused and jobs stay queued. Fix the key or billing, then `/kf2v-admin resume`.",
        "cmd.kf2v": "Make a {lengths} video from a first and a last frame",
        "alert.delivery_permission": "Videos made on server {guild} can't be posted in <#{channel}> (job "
        "{job_id} first): the bot lacks {permissions} there. Grant it to the bot's role (Server Settings → Roles, "
        "or the channel's permissions); the videos are kept and posted within a minute, and nobody is charged "
        "for a video that is never posted.",
        "alert.delivery_gone": "Job {job_id} on server {guild}: its channel and thread <#{channel}> were deleted, "
        "so its video can't be posted. The job failed and was not charged.",
        "admin.redeliver_retrying": "Job #{job_id}: posting its video now (it was waiting for Discord).",
        "admin.redeliver_posted": "Job #{job_id}: its video was posted again.",
        "admin.redeliver_gone": "Job #{job_id}: its video is no longer kept (no file, no working link).",
        "admin.redeliver_not_ready": "Job #{job_id} has no video yet (state: {state}).",
        "admin.redeliver_failed": "Job #{job_id}: Discord refused the post ({reason}); try again later.",
        "admin.redeliver_elsewhere": "Job #{job_id}: its delivery runs in the process dispatching jobs; ask "
        "again in a moment.",
        "admin.redeliver_unknown": "Job #{job_id} doesn't exist.",
        "cmd.admin_redeliver": "Post a job's kept video again (or now, if it waits for Discord)",
        "cmd.kf2v_effect": "Animate one picture with an effect template",
        "opt.first_frame": "The first frame (JPEG, PNG, BMP or WEBP)",
        "opt.last_frame": "The last frame (JPEG, PNG, BMP or WEBP)",
        "opt.prompt": "What happens between the two frames (up to 800 characters)",
        "opt.negative_prompt": "What to avoid (up to 500 characters)",
        "opt.model": "Model (default {default}; /kf2v-help lists each one's lengths and prices)",
        "opt.resolution": "Resolution: {resolutions} (default: the model's own, {defaults})",
        "opt.prompt_extend": "Let the model enrich the prompt (default on)",
        "opt.seed": "Random seed for repeatable results",
        "opt.duration": "Seconds of video, for models with a duration range ({ranges})",
        "opt.sound": "Sound on or off, where the model can switch it (default: the model's own)",
        "opt.audio": "A wav/mp3 file that drives the video, for models that take one",
        "opt.image": "The picture to animate (JPEG, PNG, BMP or WEBP)",
        "opt.template": "The effect",
        "opt.effect_model": "Model (effects need {models})",
        "jobs.none": "You have no videos on this server yet. Start one with /kf2v.",
        "jobs.title": "Your recent videos",
        "quota.title": "Video budget of this server",
        "quota.updated": "Limits updated",
        "quota.today": "Today",
        "quota.month": "This month",
        "quota.usage_line": "spent ¥{spent}, reserved ¥{reserved} of ¥{budget} · ¥{left} left · "
        "resets <t:{resets_ts}:R>",
        "quota.limits": "Member limits",
        "quota.limits_line": "{videos} videos per member per day · {queue} waiting per member · channels: {channels}",
        "quota.all_channels": "all",
        "quota.top": "Top members this month",
        "quota.top_line": "{user}: {videos} videos, ¥{spent}",
        "quota.managers_only": "Only members with Manage Server can change these limits.",
        "quota.channel_not_listed": "{channel} isn't in the allowed list.",
        "admin.bad_amount": "`{value}` isn't an amount in CNY (for example 25 or 12.5).",
        "admin.bad_guild": "`{value}` isn't a server id.",
        "admin.budget_set": "Budget set for server {guild}",
        "admin.show_title": "Server {guild}",
        "admin.paused": "Submissions are paused. New jobs still queue.",
        "admin.resumed": "Submissions resumed.",
        "admin.paused_guild": "Submissions from server {guild} are paused; its jobs stay queued, other servers go on.",
        "admin.resumed_guild": "Submissions from server {guild} resumed.",
        "admin.pauses": "Pauses in force",
        "admin.no_pauses": "none",
        "admin.pause_line": "{scope} · since <t:{since_ts}:R> · {reason}",
        "admin.pause_scope.all": "everything",
        "admin.pause_scope.account": "provider account {target}",
        "admin.pause_scope.guild": "server {target}",
        "admin.queue_header": "{count} unfinished jobs · slots in use: {slots}",
        "cmd.kf2v_jobs": "Your recent videos and where they stand",
        "cmd.kf2v_quota": "This server's video budget, usage and member limits",
        "cmd.kf2v_quota_set": "Managers: set member limits and the channels that take requests",
        "cmd.kf2v_admin": "Bot owners: budgets, pause, queue",
        "cmd.kf2v_rules": "Managers: words and phrases prompts may not contain",
        "cmd.rules_add": "Ban a word or phrase in prompts and negative prompts",
        "cmd.rules_remove": "Lift a ban on a word or phrase",
        "cmd.rules_list": "List the banned words and phrases",
        "opt.rule_phrase": "The word or phrase (up to 100 characters; case and width don't matter)",
        "opt.rule_phrase_remove": "The banned word or phrase to lift",
        "opt.rule_scope": "This server's list (default), or the bot owners' list for all servers",
        "rules.scope_guild": "this server",
        "rules.scope_all": "all servers (bot owners)",
        "rules.scope_guild_name": "this server's list",
        "rules.scope_all_name": "the list for all servers",
        "rules.added": "Added “{rule}” to {scope} ({count} of {limit}). Prompts containing it are refused from now on.",
        "rules.exists": "“{rule}” is already on {scope} ({count} of {limit}).",
        "rules.full": "Nothing added: {scope} already holds {limit} rules, the most it can. Remove one first.",
        "rules.removed": "Removed “{rule}” from {scope}.",
        "rules.not_found": "“{rule}” isn't on {scope}, so nothing was removed.",
        "rules.empty": "That phrase has no letters or digits, so it can't be a rule.",
        "rules.too_long": "A rule can be at most {limit} characters long.",
        "rules.managers_only": "Only this server's managers (Manage Server) and the bot's owners can see or change "
        "its banned words.",
        "rules.owners_only": "Only the bot's owners can change the list for all servers.",
        "rules.list_title": "Banned words and phrases: {scope} ({count})",
        "rules.list_empty": "None yet.",
        "rules.refused_prompt_guild": "Your prompt contains “{rule}”, which this server's rules don't allow. "
        "Nothing was charged; change the wording and try again.",
        "rules.refused_negative_prompt_guild": "Your negative prompt contains “{rule}”, which this server's rules "
        "don't allow. Nothing was charged; change the wording and try again.",
        "rules.refused_prompt_default": "Your prompt contains “{rule}”, which the bot's rules for all servers "
        "don't allow. Nothing was charged; change the wording and try again.",
        "rules.refused_negative_prompt_default": "Your negative prompt contains “{rule}”, which the bot's rules "
        "for all servers don't allow. Nothing was charged; change the wording and try again.",
        "quota.rules": "Content rules",
        "quota.rules_line": "{count} rules ({own} this server's, {default} for all servers) · "
        "{refusals} prompts refused this month",
        "cmd.admin_budget": "Set a server's daily and monthly budget (CNY)",
        "cmd.admin_show": "Show any server's budget and usage",
        "cmd.admin_pause": "Pause submissions, all or one server's (jobs stay queued)",
        "cmd.admin_resume": "Resume submissions",
        "cmd.admin_queue": "Every unfinished job, all servers",
        "cmd.admin_cancel": "Cancel any job",
        "opt.member_daily_videos": "Managers: videos one member may request per day",
        "opt.user_queue_limit": "Managers: jobs one member may have waiting at once",
        "opt.allow_channel": "Managers: allow requests in this channel (none listed = everywhere)",
        "opt.disallow_channel": "Managers: stop allowing requests in this channel",
        "opt.allow_everywhere": "Managers: clear the channel list (requests anywhere)",
        "opt.guild_id": "Server id (default: this server)",
        "opt.pause_reason": "Why (shown in the status messages)",
        "opt.pause_guild_id": "Only this server id (default: every server)",
        "opt.resume_guild_id": "Lift this server's pause (default: the pause of every server)",
        "opt.daily": "Daily budget in CNY",
        "opt.monthly": "Monthly budget in CNY",
        # --- uploaded frames (bot/jobs/images.py) ---
        "image.empty": "That file is empty (0 bytes). Upload the picture again.",
        "image.too_large": "That image is {size_mb:g} MB; the limit is {limit_mb:g} MB. "
        "Upload a smaller file (for example, export it as JPEG).",
        "image.not_an_image": "That file isn't a picture (detected type: {what}). "
        "Upload the frame as a JPEG, PNG, BMP or WEBP image.",
        "image.unrecognised": "That file isn't in any image format we recognise. "
        "Upload the frame as a JPEG, PNG, BMP or WEBP image.",
        "image.unsupported_format": "{format} images can't be used. "
        "Save the frame as JPEG, PNG, BMP or WEBP and upload that.",
        "image.animated": "Animated images can't be used as a frame. "
        "Upload a single still picture (JPEG, PNG, BMP or WEBP).",
        "image.corrupt": "That image is damaged or incomplete and can't be read. Re-save it or upload it again.",
        "image.too_small": "That image is {width}×{height} pixels; each side must be at least {min} pixels. "
        "Upload a larger picture.",
        "image.too_large_dimensions": "That image is {width}×{height} pixels; each side must be at most "
        "{max} pixels. Resize it and upload it again.",
        "image.bomb": "That image claims to be {width}×{height} pixels, far too many to process. "
        "Resize it to at most {max} pixels per side.",
        "image.over_memory": "That image is {width}×{height} ({pixels} pixels): more than this bot can decode "
        "in its memory. Pictures like it may have at most {max_pixels} pixels (about {side}×{side}); "
        "resize it, or save it as JPEG (JPEGs are decoded at a reduced size).",
        # issue 12: duration, sound, driving audio, Extend
        "error.invalid_media": "That file can't be used: {detail}",
        "media.empty": "That file is empty (0 bytes). Upload it again.",
        "media.too_large": "That file is {size_mb:g} MB; the limit is {limit_mb:g} MB.",
        "media.audio_format": "That isn't an audio file this model takes. Use one of: {allowed}.",
        "media.clip_format": "That isn't a video this model can continue. Use one of: {allowed}.",
        "media.corrupt": "That file is damaged or incomplete and can't be read. Export it again and retry.",
        "media.too_long": "That file lasts {seconds} s; the limit is {max} s. Shorten it and try again.",
        "media.too_short": "That file lasts {seconds} s; it must last at least {min} s.",
        "media.clip_no_video": "That file has no video track.",
        "media.clip_small": "That video is {width}×{height} pixels; each side must be at least {min} pixels.",
        "media.clip_large": "That video is {width}×{height} pixels; each side must be at most {max} pixels.",
        "media.clip_aspect": "That video is {width}×{height} pixels; its long side may be at most {max} times "
        "its short side.",
        "input.duration_range": "`{model}` makes videos of {min} to {max} seconds; {asked} s isn't possible.",
        "input.duration_fixed": "`{model}` makes {seconds}-second videos only, so a duration of {asked} s "
        "can't be used with it. Pick a model with a duration range.",
        "input.sound_always": "`{model}` always adds a soundtrack: the provider documents no way to make its "
        "videos silent, so `sound: false` can't be honoured.",
        "input.sound_never": "`{model}` makes silent videos; it can't add sound.",
        "input.audio_model": "`{model}` can't follow an audio file. Models that can: {models}.",
        "input.audio_silent": "A driving audio file gives the video its sound; it can't be combined with "
        "`sound: false`.",
        "input.media_combination": "`{model}` can't take {asked} together.",
        "input.extend_model": "Videos from `{model}` can't be extended.",
        "input.extend_clip_long": "That video lasts {seconds} s; `{model}` continues clips of at most {max} s.",
        "input.extend_seconds": "The video lasts {clip} s; `{model}` can add 1 to {most} s to it.",
        "status.seconds_sound": "{seconds} s, with sound",
        "status.seconds_silent": "{seconds} s, silent",
        "button.extend": "Extend",
        "extend.title": "Extend video #{job_id}",
        "extend.seconds": "Seconds to add",
        "extend.started": "Extending #{parent_id}: the whole video will last {total} s and costs ¥{cost}.",
    },
    ZH: {
        "error.generic": "我们这边出了点问题(参考编号 `{ref}`)。没有产生任何费用。",
        "error.invalid_input": "该请求无法提交:{detail}",
        "error.invalid_image": "该图片无法使用:{detail}",
        "error.quota": "本服务器的视频预算不足以完成此请求。",
        "error.queue_full": "你已有 {count} 个视频在排队(上限 {limit})。请等待完成或取消一个。",
        "error.not_allowed": "你不能在这里执行此操作。",
        "error.rate_limited": "操作太频繁:请在 <t:{retry_ts}:R> 再试。",
        "error.job_not_found": "任务 #{job_id} 不存在。",
        "error.guild_only": "此命令只能在服务器内使用。",
        "input.unknown_model": "此处无法使用模型 `{model}`。",
        "input.resolution": "`{model}` 不支持 {resolution}。可选:{allowed}。",
        "input.template_model": "`{model}` 没有特效模板。特效需要:{models}。",
        "input.template_unknown": "没有名为 `{template}` 的特效。可选:{allowed}。",
        "input.prompt_blank": "提示词为空。请描述两帧之间发生的事情。",
        "input.prompt_long": "提示词有 {length} 个字符,上限为 {limit}。请缩短后重试。",
        "input.negative_long": "反向提示词有 {length} 个字符,上限为 {limit}。请缩短。",
        "input.seed": "随机种子必须是 0 到 {limit} 之间的整数。",
        "input.frames_gone": "该任务的图片已从存储中删除。请重新使用 /kf2v。",
        "quota.daily": "本服务器今日视频预算即将用完:今日剩余 ¥{left}(共 ¥{budget}),"
        "此视频需要 ¥{cost}。预算将于 <t:{resets_ts}:R> 重置。请选择更低的分辨率或稍后再试。",
        "quota.monthly": "本服务器本月视频预算即将用完:剩余 ¥{left}(共 ¥{budget}),"
        "此视频需要 ¥{cost}。预算将于 <t:{resets_ts}:R> 重置。",
        "quota.member_daily": "你今天在本服务器已达到 {limit} 个视频的上限。将于 <t:{resets_ts}:R> 重置。",
        "quota.channel_not_allowed": "此频道不能请求视频。请使用:{channels}。",
        "job.not_yours": "该任务属于其他人。",
        "guild.not_allowed": "此机器人未在本服务器启用,不在这里接受任何请求。未产生任何费用。"
        "如有疑问,请联系机器人的所有者。",
        "job.already_final": "该任务已经结束({state})。",
        "job.too_late": "该任务已在生成中,无法再取消。",
        "job.canceled": "已取消。没有产生任何费用。",
        "job.failed.content": "服务商的内容审核拒绝了图片或提示词。请更换图片或措辞。",
        "job.failed.invalid": "服务商认为请求无效(例如无法读取的图片)。",
        "job.failed.template_refused": "视频服务不接受特效 `{template}`(该名称未经服务商文档确认),请换一个特效。",
        "job.failed.provider": "视频服务出现问题,放弃了此视频。请稍后再试。",
        "job.failed.expired": "视频服务丢失了此任务(已过期)。",
        "job.failed.account_gone": "提交此任务的服务商账号已不再配置。",
        "job.failed.model_gone": "此视频所选的模型已不再提供(机器人的模型目录或地域已更改)。"
        "未扣费,请换一个模型重新提交。",
        "job.failed.undeliverable": "视频已生成,但无法发布到这里(频道或子区已删除,或机器人缺少权限)。",
        "job.failed.video_lost": "视频已生成,但下载链接已过期。",
        "job.failed.video_refused": "视频服务给出的下载地址不在其自身的存储上,机器人没有下载。已通知机器人的所有者。",
        "job.failed.not_a_video": "视频服务返回的文件不是视频,因此没有发布任何内容。已通知机器人的所有者。",
        "job.failed.lost": "视频服务始终没有确认此请求,现在已无法追查。",
        "job.failed.unanswered": "多次尝试后视频服务仍未应答此请求,因此不再重发。未收取任何费用;请稍后再试。",
        "job.failed.internal": "机器人在处理此视频时内部出错。机器人的所有者可以查看详情。",
        "state.queued": "排队中",
        "state.submitting": "提交中",
        "state.pending": "服务商排队中",
        "state.running": "生成中",
        "state.succeeded": "即将完成",
        "state.delivered": "已完成",
        "state.failed": "失败",
        "state.canceled": "已取消",
        "status.title": "视频 #{job_id} · {state}",
        "status.effect": "特效:{template}",
        "status.model": "模型",
        "status.cost": "费用",
        "status.cost_estimated": "¥{cost}(预估)",
        "status.cost_settled": "¥{cost}",
        "status.cost_none": "未收费",
        "status.requester": "请求者",
        "status.queue": "队列",
        "status.position": "队列中第 {position} 位。",
        "status.eta": "预计 <t:{ts}:R>",
        "status.progress": "进度",
        "status.elapsed": "已生成 {seconds} 秒",
        "status.outcome": "结果",
        "status.paused": "机器人所有者已暂停提交({reason});你的任务会保留位置。",
        "status.seed": "种子 {seed}",
        "submit.accepted": "视频 #{job_id} 已加入队列。请在 {where} 查看进度。",
        "submit.cannot_post": "我无法在此频道发布视频(需要“发送消息”“嵌入链接”和“附加文件”权限)。"
        "请联系服务器管理员,或换一个频道。",
        "result.ready": "{user} 你的视频 #{job_id} 已完成。",
        "result.link": "{user} 你的视频 #{job_id}({size_mb} MB)超过了本服务器的上传限制。"
        "请在此下载:{url}(链接 <t:{expires_ts}:R> 过期)。",
        "result.failed": "{user} 视频 #{job_id} 失败:{reason}",
        "result.not_charged": "此视频没有产生任何费用。",
        "result.cancelled": "{user} 视频 #{job_id} 已取消。",
        "result.actual_prompt": "模型扩写后的提示词",
        "result.seed": "种子",
        "result.cost": "费用",
        "button.cancel": "取消",
        "button.regenerate": "重新生成",
        "button.remix": "改编",
        "remix.title": "改编视频 #{job_id}",
        "remix.linked": "已改编为视频 #{job_id}:{where}",
        "modal.prompt": "提示词",
        "modal.negative_prompt": "反向提示词(可选)",
        "modal.resolution": "分辨率",
        "modal.duration": "时长(秒,{low}-{high})",
        "menu.animate": "用 kf2v 生成动画",
        "animate.title": "让这两张图片动起来",
        "animate.missing": "生成动画需要消息中有两张图片作为首帧和尾帧;这条消息有 {found} 张(需要 {needed} 张)。",
        "animate.not_images": "不是图片:{names}。",
        "animate.effect_title": "用特效让这张图片动起来",
        "modal.effect": "特效",
        "button.cancelled": "视频 #{job_id} 已取消。没有产生任何费用。",
        "button.cancel_requested": "正在向服务商取消视频 #{job_id}…",
        "admin.owner_only": "只有机器人的所有者可以使用此命令。",
        "alert.video_url_refused": "任务 {job_id}(服务商任务 {task_id}):服务商的 video_url 不在其存储上,未下载。"
        "服务商已就此任务向账号计费;服务器未被扣费。请检查 DASHSCOPE_BASE_URL 和 KF2V_VIDEO_URL_HOSTS。",
        "alert.not_a_video": "任务 {job_id}(服务商任务 {task_id}):服务商返回的视频文件不是 MP4,未发布。"
        "服务商已就此任务向账号计费;服务器未被扣费。",
        "alert.bill_clamped": "任务 {job_id}:服务商为固定时长的视频计费 {billed} 秒;"
        "服务器最多只按预留金额扣费。请核对账单。",
        "alert.lost_create": "账号 {account} 上的任务 {job_id}:创建请求的应答丢失,且在 24 小时任务有效期内"
        "无法证明哪个任务属于它。该任务已失败并释放预留金额;请检查账号中是否有被计费的任务。",
        "alert.account_gone": "任务 {job_id} 通过账号 {account} 提交,但该账号已不在配置中:任务已失败并释放预留金额,"
        "但其服务商任务可能仍在运行并计费。请在同一位置(同一变量、同一顺序)放回一个密钥,以保留进行中的任务。",
        "alert.creates_unanswered": "账号 {account} 上的任务 {job_id}:{attempts} 次创建请求均无应答,且未生成任何任务"
        "(到 DashScope 的网络过慢或中断?)。该任务已失败并释放预留金额。",
        "alert.job_crashed": "任务 {job_id} 多次内部出错后失败(日志编号 {ref});预留金额已释放。",
        "alert.account_problem": "DashScope 账号 {account} 需要处理({code}):该账号的提交已暂停,"
        "任务保留在队列中。修复密钥或账单后使用 `/kf2v-admin resume`。",
        "cmd.kf2v": "用首帧和尾帧生成 {lengths} 的视频",
        "alert.delivery_permission": "服务器 {guild} 生成的视频无法发布到 <#{channel}>(首个为任务 {job_id}):"
        "机器人在那里缺少 {permissions} 权限。请给机器人的身份组授予(服务器设置 → 身份组,或频道权限);"
        "视频会保留,并在一分钟内发布,从未发布的视频不会扣费。",
        "alert.delivery_gone": "服务器 {guild} 上的任务 {job_id}:其频道和子区 <#{channel}> 已被删除,视频无法发布。"
        "该任务已失败,不扣费。",
        "admin.redeliver_retrying": "任务 #{job_id}:正在发布其视频(之前在等待 Discord)。",
        "admin.redeliver_posted": "任务 #{job_id}:视频已重新发布。",
        "admin.redeliver_gone": "任务 #{job_id}:视频已不再保存(没有文件,也没有有效链接)。",
        "admin.redeliver_not_ready": "任务 #{job_id} 还没有视频(状态:{state})。",
        "admin.redeliver_failed": "任务 #{job_id}:Discord 拒绝了发布({reason});请稍后再试。",
        "admin.redeliver_elsewhere": "任务 #{job_id}:其发布由正在调度任务的进程负责;请稍后再试。",
        "admin.redeliver_unknown": "任务 #{job_id} 不存在。",
        "cmd.admin_redeliver": "重新发布任务保存的视频(若在等待 Discord,则立即发布)",
        "cmd.kf2v_effect": "用特效模板让一张图片动起来",
        "opt.first_frame": "首帧(JPEG、PNG、BMP 或 WEBP)",
        "opt.last_frame": "尾帧(JPEG、PNG、BMP 或 WEBP)",
        "opt.prompt": "两帧之间发生什么(最多 800 个字符)",
        "opt.negative_prompt": "需要避免的内容(最多 500 个字符)",
        "opt.model": "模型(默认 {default};/kf2v-help 列出各模型的时长和价格)",
        "opt.resolution": "分辨率:{resolutions}(默认:模型自身的 {defaults})",
        "opt.prompt_extend": "让模型扩写提示词(默认开启)",
        "opt.seed": "随机种子,用于复现结果",
        "opt.duration": "视频秒数,适用于支持时长范围的模型({ranges})",
        "opt.sound": "开启或关闭声音,仅限可切换的模型(默认:模型自身设定)",
        "opt.audio": "驱动视频的 wav/mp3 文件,仅限支持的模型",
        "opt.image": "要动起来的图片(JPEG、PNG、BMP 或 WEBP)",
        "opt.template": "特效",
        "opt.effect_model": "模型(特效需要 {models})",
        "jobs.none": "你在本服务器还没有视频。使用 /kf2v 开始。",
        "jobs.title": "你最近的视频",
        "quota.title": "本服务器的视频预算",
        "quota.updated": "限制已更新",
        "quota.today": "今日",
        "quota.month": "本月",
        "quota.usage_line": "已花费 ¥{spent},预留 ¥{reserved},预算 ¥{budget} · 剩余 ¥{left} · <t:{resets_ts}:R> 重置",
        "quota.limits": "成员限制",
        "quota.limits_line": "每位成员每天 {videos} 个视频 · 每位成员最多 {queue} 个排队 · 频道:{channels}",
        "quota.all_channels": "全部",
        "quota.top": "本月使用最多的成员",
        "quota.top_line": "{user}:{videos} 个视频,¥{spent}",
        "quota.managers_only": "只有拥有“管理服务器”权限的成员可以修改这些限制。",
        "quota.channel_not_listed": "{channel} 不在允许列表中。",
        "admin.bad_amount": "`{value}` 不是有效的人民币金额(例如 25 或 12.5)。",
        "admin.bad_guild": "`{value}` 不是服务器 ID。",
        "admin.budget_set": "已为服务器 {guild} 设置预算",
        "admin.show_title": "服务器 {guild}",
        "admin.paused": "提交已暂停。新任务仍会排队。",
        "admin.resumed": "提交已恢复。",
        "admin.paused_guild": "服务器 {guild} 的提交已暂停;其任务保留在队列中,其他服务器照常进行。",
        "admin.resumed_guild": "服务器 {guild} 的提交已恢复。",
        "admin.pauses": "生效中的暂停",
        "admin.no_pauses": "无",
        "admin.pause_line": "{scope} · 自 <t:{since_ts}:R> · {reason}",
        "admin.pause_scope.all": "全部",
        "admin.pause_scope.account": "服务商账号 {target}",
        "admin.pause_scope.guild": "服务器 {target}",
        "admin.queue_header": "{count} 个未完成任务 · 使用中的槽位:{slots}",
        "cmd.kf2v_jobs": "你最近的视频及其状态",
        "cmd.kf2v_quota": "本服务器的视频预算、用量和成员限制",
        "cmd.kf2v_quota_set": "管理员:设置成员限制和可提交请求的频道",
        "cmd.kf2v_admin": "机器人所有者:预算、暂停、队列",
        "cmd.kf2v_rules": "管理员:提示词中禁止出现的词语",
        "cmd.rules_add": "禁止提示词和反向提示词中出现某个词语",
        "cmd.rules_remove": "解除对某个词语的禁止",
        "cmd.rules_list": "列出被禁止的词语",
        "opt.rule_phrase": "词语或短语(最多 100 个字符;不区分大小写和全角半角)",
        "opt.rule_phrase_remove": "要解除禁止的词语或短语",
        "opt.rule_scope": "本服务器的列表(默认),或机器人所有者对所有服务器的列表",
        "rules.scope_guild": "本服务器",
        "rules.scope_all": "所有服务器(机器人所有者)",
        "rules.scope_guild_name": "本服务器的列表",
        "rules.scope_all_name": "所有服务器的列表",
        "rules.added": "已将“{rule}”加入{scope}(第 {count} 条,上限 {limit} 条)。此后包含它的提示词会被拒绝。",
        "rules.exists": "“{rule}”已在{scope}中(共 {count} 条,上限 {limit} 条)。",
        "rules.full": "未添加:{scope}已有 {limit} 条规则,达到上限。请先删除一条。",
        "rules.removed": "已从{scope}中删除“{rule}”。",
        "rules.not_found": "“{rule}”不在{scope}中,未删除任何内容。",
        "rules.empty": "这个短语不含字母或数字,不能作为规则。",
        "rules.too_long": "一条规则最多 {limit} 个字符。",
        "rules.managers_only": "只有本服务器的管理员(管理服务器权限)和机器人所有者可以查看或修改禁用词。",
        "rules.owners_only": "只有机器人所有者可以修改所有服务器的列表。",
        "rules.list_title": "禁用词:{scope}({count} 条)",
        "rules.list_empty": "暂无。",
        "rules.refused_prompt_guild": "你的提示词包含“{rule}”,本服务器的规则不允许。未产生任何费用;请修改措辞后重试。",
        "rules.refused_negative_prompt_guild": "你的反向提示词包含“{rule}”,本服务器的规则不允许。"
        "未产生任何费用;请修改措辞后重试。",
        "rules.refused_prompt_default": "你的提示词包含“{rule}”,机器人对所有服务器的规则不允许。"
        "未产生任何费用;请修改措辞后重试。",
        "rules.refused_negative_prompt_default": "你的反向提示词包含“{rule}”,机器人对所有服务器的规则不允许。"
        "未产生任何费用;请修改措辞后重试。",
        "quota.rules": "内容规则",
        "quota.rules_line": "{count} 条规则(本服务器 {own} 条,所有服务器 {default} 条)· 本月已拒绝 {refusals} 条提示词",
        "cmd.admin_budget": "设置服务器的每日和每月预算(人民币)",
        "cmd.admin_show": "查看任意服务器的预算和用量",
        "cmd.admin_pause": "暂停全部或某个服务器的提交(任务保留在队列中)",
        "cmd.admin_resume": "恢复提交",
        "cmd.admin_queue": "所有服务器的未完成任务",
        "cmd.admin_cancel": "取消任意任务",
        "opt.member_daily_videos": "管理员:每位成员每天可请求的视频数",
        "opt.user_queue_limit": "管理员:每位成员可同时排队的任务数",
        "opt.allow_channel": "管理员:允许在此频道请求(未列出任何频道 = 全部允许)",
        "opt.disallow_channel": "管理员:不再允许在此频道请求",
        "opt.allow_everywhere": "管理员:清空频道列表(任何频道都可请求)",
        "opt.guild_id": "服务器 ID(默认:本服务器)",
        "opt.pause_reason": "原因(显示在状态消息中)",
        "opt.pause_guild_id": "仅此服务器 ID(默认:所有服务器)",
        "opt.resume_guild_id": "解除此服务器的暂停(默认:解除全部暂停)",
        "opt.daily": "每日预算(人民币)",
        "opt.monthly": "每月预算(人民币)",
        # --- uploaded frames (bot/jobs/images.py) ---
        "image.empty": "该文件是空的(0 字节)。请重新上传图片。",
        "image.too_large": "该图片大小为 {size_mb:g} MB,上限为 {limit_mb:g} MB。请上传更小的文件(例如导出为 JPEG)。",
        "image.not_an_image": "该文件不是图片(检测到的类型:{what})。请上传 JPEG、PNG、BMP 或 WEBP 格式的图片。",
        "image.unrecognised": "无法识别该文件的图片格式。请上传 JPEG、PNG、BMP 或 WEBP 格式的图片。",
        "image.unsupported_format": "不支持 {format} 格式的图片。请将画面另存为 JPEG、PNG、BMP 或 WEBP 后再上传。",
        "image.animated": "动图不能用作画面帧。请上传一张静态图片(JPEG、PNG、BMP 或 WEBP)。",
        "image.corrupt": "该图片已损坏或不完整,无法读取。请重新保存或重新上传。",
        "image.too_small": "该图片为 {width}×{height} 像素,每条边至少需要 {min} 像素。请上传更大的图片。",
        "image.too_large_dimensions": "该图片为 {width}×{height} 像素,每条边最多 {max} 像素。请缩小尺寸后重新上传。",
        "image.bomb": "该图片声明的尺寸为 {width}×{height} 像素,像素过多,无法处理。请将每条边缩小到 {max} 像素以内。",
        "image.over_memory": "该图片为 {width}×{height}({pixels} 像素),超出本机器人解码时可用的内存。"
        "此类图片最多 {max_pixels} 像素(约 {side}×{side});请缩小尺寸,或另存为 JPEG(JPEG 会以缩小的尺寸解码)。",
        "error.invalid_media": "该文件无法使用:{detail}",
        "media.empty": "该文件是空的(0 字节)。请重新上传。",
        "media.too_large": "该文件大小为 {size_mb:g} MB,上限为 {limit_mb:g} MB。",
        "media.audio_format": "该模型不接受这种音频文件。请使用:{allowed}。",
        "media.clip_format": "该模型无法续写这种视频。请使用:{allowed}。",
        "media.corrupt": "该文件已损坏或不完整,无法读取。请重新导出后再试。",
        "media.too_long": "该文件时长 {seconds} 秒,上限为 {max} 秒。请剪短后再试。",
        "media.too_short": "该文件时长 {seconds} 秒,至少需要 {min} 秒。",
        "media.clip_no_video": "该文件没有视频轨道。",
        "media.clip_small": "该视频为 {width}×{height} 像素,每条边至少需要 {min} 像素。",
        "media.clip_large": "该视频为 {width}×{height} 像素,每条边最多 {max} 像素。",
        "media.clip_aspect": "该视频为 {width}×{height} 像素,长边最多为短边的 {max} 倍。",
        "input.duration_range": "`{model}` 生成 {min} 到 {max} 秒的视频;无法生成 {asked} 秒。",
        "input.duration_fixed": "`{model}` 只能生成 {seconds} 秒的视频,无法使用 {asked} 秒的时长。"
        "请选择支持时长范围的模型。",
        "input.sound_always": "`{model}` 总会生成声音:服务商没有公开关闭声音的方法,因此无法满足 `sound: false`。",
        "input.sound_never": "`{model}` 生成无声视频,无法添加声音。",
        "input.audio_model": "`{model}` 不能根据音频文件生成。支持的模型:{models}。",
        "input.audio_silent": "驱动音频会成为视频的声音,不能与 `sound: false` 同时使用。",
        "input.media_combination": "`{model}` 不接受 {asked} 的组合。",
        "input.extend_model": "`{model}` 生成的视频无法续写。",
        "input.extend_clip_long": "该视频时长 {seconds} 秒;`{model}` 只能续写最长 {max} 秒的片段。",
        "input.extend_seconds": "该视频时长 {clip} 秒;`{model}` 可以为其增加 1 到 {most} 秒。",
        "status.seconds_sound": "{seconds} 秒,有声",
        "status.seconds_silent": "{seconds} 秒,无声",
        "button.extend": "续写",
        "extend.title": "续写视频 #{job_id}",
        "extend.seconds": "增加的秒数",
        "extend.started": "正在续写 #{parent_id}:完整视频时长 {total} 秒,费用 ¥{cost}。",
    },
}


# --- stories (/kf2v-story, bot/jobs/story, bot/discord_ui/story.py) ---
MESSAGES[EN].update(
    {
        "cmd.kf2v_story": "Join three to six keyframes into one continuous video",
        "opt.frame1": "Keyframe 1: the story starts here (its size sets the video's shape)",
        "opt.frame2": "Keyframe 2",
        "opt.frame3": "Keyframe 3",
        "opt.frame_more": "Another keyframe (optional)",
        "opt.story_prompt": "What happens: one prompt for all, or one per segment separated by |",
        "story.frame_count": "A story takes {low} to {high} keyframes; this one has {count}.",
        "story.prompt_count": "You gave {prompts} prompts for {segments} segments. Give one prompt for all, "
        "or exactly {segments} separated by |.",
        "story.prompt_empty": "The prompt for segment {segment} is empty (between two |).",
        "story.frame_unreadable": "Keyframe {frame} can't be read as a picture.",
        "story.frame_over_memory": "Keyframe {frame} ({width}×{height}) can't be fitted to the first keyframe's "
        "{target} within this bot's memory. Use smaller pictures (a JPEG is decoded at a reduced size).",
        "story.no_choice": "That story isn't waiting for a choice any more.",
        "story.no_redo": "That segment can't be redone now (only a finished story's segments can).",
        "story.unknown": "That story doesn't exist.",
        "story.title": "Story #{story_id} · {segments} segments",
        "story.segment.waiting": "waiting",
        "story.segment.running": "generating",
        "story.segment.ready": "done",
        "story.segment.retrying": "failed once, retrying with a new seed",
        "story.segment.failed": "failed",
        "story.segment.canceled": "cancelled",
        "story.segment_line": "{mark} Segment {segment} (frame {first} → {last}): {state} · {prompt}",
        "story.reserved": "Reserved",
        "story.redo": "Redo segment…",
        "story.redo_option": "Redo segment {segment} (frame {first} → {last})",
        "story.partial_button": "Deliver as far as it got",
        "story.accepted": "Story #{story_id} is queued: {segments} segments, ¥{cost} reserved. Follow it in {where}.",
        "story.ready": "{user} your story #{story_id} is ready.",
        "story.ready_partial": "{user} here is story #{story_id} as far as it got.",
        "story.too_large": "{user} story #{story_id} is ready but, at {size_mb} MB, larger than this server "
        "allows for uploads, and the provider's links to its segments could not be had. Try a lower resolution.",
        "story.failed": "{user} story #{story_id} failed: a segment failed twice. Charged so far: ¥{charged}; "
        "everything else was released.",
        "story.partial_offer": "{ready} of {segments} segments are done from the start. Press the button to get "
        "them as one video.",
        "story.partial_chosen": "Story #{story_id} will be delivered as far as it got.",
        "story.redo_started": "Redoing segment {segment} of story #{story_id} as video #{job_id} (¥{cost} "
        "reserved); the story is joined again when it is done.",
        "story.links": "{user} story #{story_id} ({size_mb} MB) is larger than this server allows for uploads. "
        "Its segments, in order, from the provider:",
        "story.link_line": "{segment}. {url} (expires <t:{expires_ts}:R>)",
        "story.cancel_button": "Cancel story",
        "story.cancel_done": "Story #{story_id} was cancelled.",
        "story.cancelled": "{user} story #{story_id} was cancelled. Charged: ¥{charged} (a segment already being "
        "generated is paid, as for any video); everything else was released.",
        "story.join_failed": "{user} story #{story_id} failed: its segments could not be joined. Charged: "
        "¥{charged}. The bot's owners have the details.",
        "story.not_running": "That story isn't running any more.",
        "story.retry_refused": "{user} story #{story_id} stopped: a segment failed and its retry was refused by "
        "the server's limits (budget or daily videos). Charged: up to ¥{charged} (segments still being generated "
        "are paid when they finish); everything else was released.",
        "story.redo_busy": "A redo of that story is already under way; choose again once it is delivered.",
        "story.videos_gone": "The other segments of that story were already removed from storage, so it can't be "
        "joined again. Start a new /kf2v-story.",
    }
)
MESSAGES[ZH].update(
    {
        "cmd.kf2v_story": "把三到六张关键帧连成一段连续视频",
        "opt.frame1": "关键帧 1:故事从这里开始(它的尺寸决定视频的画幅)",
        "opt.frame2": "关键帧 2",
        "opt.frame3": "关键帧 3",
        "opt.frame_more": "更多关键帧(可选)",
        "opt.story_prompt": "发生什么:一个提示词用于全部,或每段一个,用 | 分隔",
        "story.frame_count": "一个故事需要 {low} 到 {high} 张关键帧;这里有 {count} 张。",
        "story.prompt_count": "你给了 {prompts} 个提示词,但有 {segments} 段。请给一个通用提示词,"
        "或正好 {segments} 个,用 | 分隔。",
        "story.prompt_empty": "第 {segment} 段的提示词是空的(两个 | 之间)。",
        "story.frame_unreadable": "关键帧 {frame} 无法作为图片读取。",
        "story.frame_over_memory": "关键帧 {frame}({width}×{height})无法在本机器人的内存内缩放到第一个关键帧的 "
        "{target}。请使用更小的图片(JPEG 会以缩小的尺寸解码)。",
        "story.no_choice": "这个故事已不再等待你的选择。",
        "story.no_redo": "现在不能重做这一段(只能重做已完成故事的段落)。",
        "story.unknown": "这个故事不存在。",
        "story.title": "故事 #{story_id} · {segments} 段",
        "story.segment.waiting": "等待中",
        "story.segment.running": "生成中",
        "story.segment.ready": "完成",
        "story.segment.retrying": "失败一次,正在用新种子重试",
        "story.segment.failed": "失败",
        "story.segment.canceled": "已取消",
        "story.segment_line": "{mark} 第 {segment} 段(帧 {first} → {last}):{state} · {prompt}",
        "story.reserved": "已预留",
        "story.redo": "重做某一段…",
        "story.redo_option": "重做第 {segment} 段(帧 {first} → {last})",
        "story.partial_button": "交付已完成的部分",
        "story.accepted": "故事 #{story_id} 已排队:{segments} 段,已预留 ¥{cost}。请在 {where} 查看进度。",
        "story.ready": "{user} 你的故事 #{story_id} 已完成。",
        "story.ready_partial": "{user} 这是故事 #{story_id} 已完成的部分。",
        "story.too_large": "{user} 故事 #{story_id} 已完成,但大小为 {size_mb} MB,超过本服务器的上传上限,"
        "且无法取得服务商处各段视频的链接。请改用更低的分辨率。",
        "story.failed": "{user} 故事 #{story_id} 失败:有一段连续失败两次。目前已扣费 ¥{charged};其余预留已释放。",
        "story.partial_offer": "从开头起已完成 {ready}/{segments} 段。按下按钮即可把它们合成一段视频。",
        "story.partial_chosen": "故事 #{story_id} 将按已完成的部分交付。",
        "story.redo_started": "正在重做故事 #{story_id} 的第 {segment} 段,作为视频 #{job_id}(已预留 ¥{cost});"
        "完成后会重新拼接故事。",
        "story.links": "{user} 故事 #{story_id}({size_mb} MB)超过本服务器的上传上限。以下是服务商处的各段视频,按顺序:",
        "story.link_line": "{segment}. {url} (<t:{expires_ts}:R> 失效)",
        "story.cancel_button": "取消故事",
        "story.cancel_done": "故事 #{story_id} 已取消。",
        "story.cancelled": "{user} 故事 #{story_id} 已取消。已扣费 ¥{charged}(已在生成中的段落照常计费);"
        "其余预留已释放。",
        "story.join_failed": "{user} 故事 #{story_id} 失败:无法拼接各段。已扣费 ¥{charged}。机器人所有者已收到详情。",
        "story.not_running": "这个故事已不在进行中。",
        "story.retry_refused": "{user} 故事 #{story_id} 已停止:有一段失败,且其重试被服务器的限额(预算或每日视频数)"
        "拒绝。扣费:最多 ¥{charged}(仍在生成的段落完成后计费);其余预留已释放。",
        "story.redo_busy": "该故事已有一段正在重做;请在其交付后再选择。",
        "story.videos_gone": "该故事的其他段落已从存储中删除,无法重新拼接。请发起新的 /kf2v-story。",
    }
)


# --- the members' and admins' surface (issue 19): /kf2v-help, Details, Delete, Vary, /kf2v-quota-set ---
MESSAGES[EN].update(
    {
        "cmd.kf2v_help": "How to use kf2v: tips, commands, buttons, models, prices and your allowance today",
        "help.title": "kf2v: a video from your keyframes",
        "help.intro": "Give the bot two pictures (where the video starts and where it ends) and a sentence about "
        "what happens in between. Your request waits its turn in a fair queue; its place, cost and progress "
        "show in a thread, and the video is posted there.",
        "help.frames_title": "Good keyframes",
        "help.frames": "• The same scene in both frames, with the same framing and aspect ratio: the video takes "
        "the first frame's shape.\n"
        "• Change a few things between them (a pose, the light, a small camera move); a jump to another "
        "scene gives a blurry morph.\n"
        "• Sharp pictures, {formats}, sides of {min_side} to {max_side} px, up to {max_mb} MB each.",
        "help.prompts_title": "Prompts that work",
        "help.prompts": '• Describe the motion and the camera, not the pictures: "she turns and smiles, the camera '
        'slowly pushes in".\n'
        '• One main action per video; name a style once ("watercolour", "film grain").\n'
        '• Put what you don\'t want in `negative_prompt` ("blur, extra fingers, text").\n'
        "• `prompt_extend` lets the model enrich a short prompt (the result shows what it used); turn it off "
        "to keep your words. The same `seed` and inputs give a similar video; `count` makes up to 4 variations "
        "with different seeds at once.",
        "help.buttons_title": "Buttons on a video",
        "help.buttons": "**Cancel** stops a video that is still waiting (nothing is charged). **Regenerate** makes "
        "it again with a new seed; **Remix** changes the prompt, resolution or length; **Extend** continues a "
        "finished video (models that can); **Vary** makes two more with new seeds in the same thread. "
        "**Details** shows you privately every setting, the prompt the provider used and a command to make it "
        "again. **Delete** takes the video down (what it cost stays spent). The requester, the server's managers "
        "and the bot's owners may press them; Details is for everyone.",
        "help.commands_title": "Commands you can use here",
        "help.command_line": "`/{name}`: {description}",
        "help.menu_line": "Apps → **{name}** on a message with one or two pictures: animate them",
        "help.models_title": "Models, lengths and prices here",
        "help.model_line": "**{model}** · {lengths} · {prices}{extras}",
        "help.price": "{resolution} ¥{price}/s",
        "help.sound": " · with sound",
        "help.audio": " · can follow an audio file",
        "help.extends": " · can be extended",
        "help.effects": " · {count} effects (/kf2v-effect)",
        "help.example": "For example, a {seconds} s {resolution} video from `{model}` costs ¥{cost}.",
        "help.allowance_title": "Your allowance today",
        "help.allowance": "You may ask for {videos_left} more of {videos} videos today, with {active} of {queue} "
        "waiting now. This server has ¥{left_day} of ¥{budget_day} left today and ¥{left_month} this month; "
        "the day resets <t:{resets_ts}:R>.",
        "help.channels": "Requests are taken in: {channels}",
        "help.footer": "Only you can see this. Prices are what the bot counts against this server's budget.",
        # Privacy: /kf2v-forget-me, /kf2v-admin forget, requests erased by KF2V_RETENTION_DAYS.
        "cmd.kf2v_forget_me": "Erase your prompts, frames, videos and user id from this bot",
        "cmd.admin_forget": "Erase a user's prompts, frames, videos and id (as /kf2v-forget-me does)",
        "opt.forget_user_id": "The Discord user id whose data to erase",
        "admin.bad_user": "`{value}` isn't a Discord user id (a number like 123456789012345678).",
        "forget.confirm": "This erases, in every server this bot serves: the prompts you wrote, the frames and "
        "audio you uploaded, the videos kept for you and your user id on every request. Requests still in progress "
        "finish and are delivered first, then are erased too. What was spent stays counted in each server's budget, "
        "without your name. Messages already posted in Discord stay: delete them there. This can't be undone.",
        "forget.confirm_button": "Erase my data",
        "forget.keep_button": "Keep it",
        "forget.kept": "Nothing was erased.",
        "forget.done": "Erased: {jobs} requests and {stories} stories; {files} files removed.",
        "forget.pending": "{pending} still in progress: they finish and are delivered first, then are erased.",
        "job.erased": "That request's prompt and frames were erased (after the retention period, or at the "
        "member's request). Start a new /kf2v.",
        "opt.count": "How many variations (different seeds) to make at once: 1 to 4, each at the full price",
        "input.count": "`count` must be a whole number from 1 to {limit}.",
        "quota.batch_queue": "{count} more videos would make {total} waiting for you; the limit is {limit}. "
        "Ask for fewer variations or wait for some to finish.",
        "quota.batch_member_daily": "You may ask for {left} more videos today (limit {limit}), not {count}. "
        "It resets <t:{resets_ts}:R>.",
        "vary.accepted": "{count} variations are queued: {job_ids} (¥{cost} reserved in all). Follow them in {where}.",
        "button.vary": "Vary",
        "button.details": "Details",
        "button.delete": "Delete",
        "details.title": "Video #{job_id}: details",
        "details.prompt": "Prompt",
        "details.actual_prompt": "Prompt the provider used",
        "details.not_rewritten": "(as written: the provider did not report a rewritten prompt)",
        "details.negative": "Negative prompt",
        "details.resolution": "Resolution",
        "details.length": "Length",
        "details.seed_provider": "chosen by the provider (not reported)",
        "details.created": "Asked",
        "details.command": "To make it again, attach the same first and last frame to:",
        "details.no_command": "This video continues video #{parent_id}: use Extend on that one to make another.",
        "result.not_delivered": "Video #{job_id} has not been posted, so there is nothing to delete.",
        "result.already_deleted": "Video #{job_id} was already deleted.",
        "delete.done": "Video #{job_id} was deleted. What it cost ({cost}) stays spent: the provider billed it "
        "when it was made.",
        "delete.note": "Video #{job_id} was deleted by {user}.",
        "delete.thread_name": "#{job_id} (deleted)",
        "state.deleted": "Deleted",
        "story.not_posted": "Story #{story_id} has not been posted, so there is nothing to delete.",
        "story.already_deleted": "Story #{story_id} was already deleted.",
        "story.deleted": "Story #{story_id} was deleted. What it cost (¥{cost}) stays spent: the provider billed "
        "its segments when they were made.",
        "story.deleted_note": "Story #{story_id} was deleted by {user}.",
        "story.thread_deleted": "Story #{story_id} (deleted)",
        "story.details_title": "Story #{story_id}: details",
        "story.details_segment": "**Segment {segment}** (frame {first} → {last}): {prompt}",
        "story.details_command": "To make it again, attach the same {frames} keyframes, in order, to:",
    }
)
MESSAGES[ZH].update(
    {
        "cmd.kf2v_help": "kf2v 使用说明:技巧、命令、按钮、模型、价格和你今天的额度",
        "help.title": "kf2v:用关键帧生成视频",
        "help.intro": "给机器人两张图片(视频的开头和结尾),再用一句话描述中间发生的事。你的请求会在公平队列中"
        "排队;排队位置、费用和进度显示在一个子区中,视频也会发在那里。",
        "help.frames_title": "好的关键帧",
        "help.frames": "• 两帧是同一个场景,构图和画幅比例一致:视频采用首帧的画幅。\n"
        "• 两帧之间只改变少数几处(姿势、光线、轻微的镜头移动);跳到另一个场景会得到模糊的变形。\n"
        "• 清晰的图片,{formats},边长 {min_side} 到 {max_side} 像素,每张最大 {max_mb} MB。",
        "help.prompts_title": "好用的提示词",
        "help.prompts": '• 描述动作和镜头,而不是描述图片:"她转身微笑,镜头缓缓推近"。\n'
        '• 每个视频一个主要动作;风格只说一次("水彩"、"胶片颗粒")。\n'
        '• 不想要的内容写在 `negative_prompt` 里("模糊、多余的手指、文字")。\n'
        "• `prompt_extend` 让模型扩写简短的提示词(结果会显示实际使用的提示词);关闭它可保留原话。"
        "相同的 `seed` 和输入会得到相似的视频;`count` 可一次生成最多 4 个不同种子的变体。",
        "help.buttons_title": "视频上的按钮",
        "help.buttons": "**取消** 停止仍在等待的视频(不收费)。**重新生成** 用新种子再做一次;**改编** 修改提示词、"
        "分辨率或时长;**续写** 接着已完成的视频继续生成(限支持的模型);**变体** 在同一子区中用新种子再生成两个。"
        "**详情** 私下显示全部设置、服务商实际使用的提示词和再次生成的命令。**删除** 撤下视频(已产生的费用不退)。"
        "请求者、服务器管理员和机器人所有者可以使用这些按钮;详情所有人可看。",
        "help.commands_title": "你在这里可以使用的命令",
        "help.command_line": "`/{name}`:{description}",
        "help.menu_line": "应用 → **{name}**,用于带一到两张图片的消息:让它们动起来",
        "help.models_title": "此处的模型、时长和价格",
        "help.model_line": "**{model}** · {lengths} · {prices}{extras}",
        "help.price": "{resolution} ¥{price}/秒",
        "help.sound": " · 有声",
        "help.audio": " · 可根据音频文件生成",
        "help.extends": " · 可续写",
        "help.effects": " · {count} 种特效(/kf2v-effect)",
        "help.example": "例如,`{model}` 生成 {seconds} 秒 {resolution} 视频的费用为 ¥{cost}。",
        "help.allowance_title": "你今天的额度",
        "help.allowance": "今天你还可以请求 {videos_left} 个视频(共 {videos} 个),目前有 {active} 个在排队"
        "(上限 {queue})。本服务器今日剩余 ¥{left_day}(共 ¥{budget_day}),本月剩余 ¥{left_month};"
        "今日额度 <t:{resets_ts}:R> 重置。",
        "help.channels": "可以提交请求的频道:{channels}",
        "help.footer": "只有你能看到这条消息。价格即机器人计入本服务器预算的金额。",
        "cmd.kf2v_forget_me": "从本机器人中删除你的提示词、图片、视频和用户 ID",
        "cmd.admin_forget": "删除某个用户的提示词、图片、视频和 ID(与 /kf2v-forget-me 相同)",
        "opt.forget_user_id": "要删除其数据的 Discord 用户 ID",
        "admin.bad_user": "`{value}` 不是 Discord 用户 ID(应为类似 123456789012345678 的数字)。",
        "forget.confirm": "此操作将在本机器人服务的所有服务器中删除:你写的提示词、你上传的图片和音频、为你保存的视频,"
        "以及每个请求上的你的用户 ID。仍在进行中的请求会先完成并交付,然后同样被删除。已花费的金额仍计入各服务器的预算,"
        "但不再与你关联。已发布在 Discord 中的消息会保留:请在 Discord 中删除。此操作无法撤销。",
        "forget.confirm_button": "删除我的数据",
        "forget.keep_button": "保留",
        "forget.kept": "未删除任何内容。",
        "forget.done": "已删除:{jobs} 个请求和 {stories} 个故事;已移除 {files} 个文件。",
        "forget.pending": "{pending} 个仍在进行中:它们会先完成并交付,然后被删除。",
        "job.erased": "该请求的提示词和图片已被删除(超过保留期限,或应成员要求)。请重新使用 /kf2v。",
        "opt.count": "一次生成几个变体(不同种子):1 到 4 个,每个按全价计费",
        "input.count": "`count` 必须是 1 到 {limit} 之间的整数。",
        "quota.batch_queue": "再加 {count} 个视频,你排队的视频将达到 {total} 个;上限为 {limit}。"
        "请减少变体数量,或等待部分视频完成。",
        "quota.batch_member_daily": "你今天还可以请求 {left} 个视频(上限 {limit}),不够 {count} 个。"
        "将于 <t:{resets_ts}:R> 重置。",
        "vary.accepted": "{count} 个变体已排队:{job_ids}(共预留 ¥{cost})。请在 {where} 查看进度。",
        "button.vary": "变体",
        "button.details": "详情",
        "button.delete": "删除",
        "details.title": "视频 #{job_id}:详情",
        "details.prompt": "提示词",
        "details.actual_prompt": "服务商实际使用的提示词",
        "details.not_rewritten": "(原样使用:服务商未返回改写后的提示词)",
        "details.negative": "反向提示词",
        "details.resolution": "分辨率",
        "details.length": "时长",
        "details.seed_provider": "由服务商选择(未返回)",
        "details.created": "请求时间",
        "details.command": "要再次生成,请附上相同的首帧和尾帧并使用:",
        "details.no_command": "此视频是视频 #{parent_id} 的续写:请在那个视频上使用“续写”再生成一个。",
        "result.not_delivered": "视频 #{job_id} 尚未发布,没有可删除的内容。",
        "result.already_deleted": "视频 #{job_id} 已被删除。",
        "delete.done": "视频 #{job_id} 已删除。已产生的费用({cost})不会退回:服务商在生成时已计费。",
        "delete.note": "视频 #{job_id} 已被 {user} 删除。",
        "delete.thread_name": "#{job_id}(已删除)",
        "state.deleted": "已删除",
        "story.not_posted": "故事 #{story_id} 尚未发布,没有可删除的内容。",
        "story.already_deleted": "故事 #{story_id} 已被删除。",
        "story.deleted": "故事 #{story_id} 已删除。已产生的费用(¥{cost})不会退回:服务商在生成各段时已计费。",
        "story.deleted_note": "故事 #{story_id} 已被 {user} 删除。",
        "story.thread_deleted": "故事 #{story_id}(已删除)",
        "story.details_title": "故事 #{story_id}:详情",
        "story.details_segment": "**第 {segment} 段**(帧 {first} → {last}):{prompt}",
        "story.details_command": "要再次生成,请按顺序附上相同的 {frames} 张关键帧并使用:",
    }
)

# Autocomplete suggestions of model, resolution, duration and template (bot/discord_ui/options.py).
MESSAGES[EN].update(
    {
        "choice.model": "{model} · {lengths} · {resolutions}",
        "choice.seconds": "{seconds} s",
        "choice.template": "{template} · {name}",
        "choice.default": "{label} (default)",
    }
)
MESSAGES[ZH].update(
    {
        "choice.model": "{model} · {lengths} · {resolutions}",
        "choice.seconds": "{seconds} 秒",
        "choice.template": "{template} · {name}",
        "choice.default": "{label}(默认)",
    }
)


# Spend reports (issue 19): /kf2v-admin report, the managers' /kf2v-quota chart.
MESSAGES[EN].update(
    {
        "cmd.admin_report": "Spend chart (PNG) and CSV of the last 30 days: every server, or one",
        "opt.report_guild_id": "Server id (default: every server together, with the top servers)",
        "report.attached": "Spend of the last {days} days: the chart and the same figures as CSV for spreadsheets.",
        "chart.title_guild": "Server {guild} · last {days} days · {total} CNY spent",
        "chart.title_all": "All servers · last {days} days · {total} CNY spent",
        "chart.spend": "Spend per day (CNY), by model",
        "chart.month": "Spent so far each month (CNY)",
        "chart.outcomes": "Jobs per day",
        "chart.daily_budget": "daily budget {amount}",
        "chart.monthly_budget": "monthly budget {amount}",
        "chart.reserved": "reserved (in progress)",
        "chart.delivered": "delivered",
        "chart.failed": "failed",
        "chart.canceled": "canceled",
        "chart.in_progress": "in progress",
        "chart.top_guilds": "Top servers, {days} days (CNY)",
        "chart.no_spend": "Nothing was spent in these {days} days",
    }
)
MESSAGES[ZH].update(
    {
        "cmd.admin_report": "最近 30 天的花费图表(PNG)和 CSV:所有服务器或单个服务器",
        "opt.report_guild_id": "服务器 ID(默认:所有服务器合计,并列出花费最多的服务器)",
        "report.attached": "最近 {days} 天的花费:图表,以及可用于电子表格的相同数据(CSV)。",
        "chart.title_guild": "服务器 {guild} · 最近 {days} 天 · 已花费 {total} 元",
        "chart.title_all": "所有服务器 · 最近 {days} 天 · 已花费 {total} 元",
        "chart.spend": "每日花费(元),按模型",
        "chart.month": "本月累计花费(元)",
        "chart.outcomes": "每日任务数",
        "chart.daily_budget": "每日预算 {amount}",
        "chart.monthly_budget": "每月预算 {amount}",
        "chart.reserved": "已预留(进行中)",
        "chart.delivered": "已交付",
        "chart.failed": "失败",
        "chart.canceled": "已取消",
        "chart.in_progress": "进行中",
        "chart.top_guilds": "花费最多的服务器,{days} 天(元)",
        "chart.no_spend": "这 {days} 天内没有花费",
    }
)


def language(locale: str | None) -> str:
    """Discord locale -> catalog language ('zh-CN' and 'zh-TW' read Chinese; everything else English)."""
    if locale and locale.lower().startswith("zh"):
        return ZH
    return EN


def t(locale: str | None, key: str, /, **params: Any) -> str:
    lang = language(locale)
    template = MESSAGES[lang].get(key) or MESSAGES[EN].get(key)
    if template is None:
        raise KeyError(f"message {key!r} is missing from the catalog")
    return template.format(**params)
