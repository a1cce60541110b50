"""What a real phone prints for the commands the phone line runs, generated from the model.

Where each format comes from (none of this was captured from a phone in this project; it is
written from the code that prints it, and docs/phone.md says so):

- `dumpsys notification --noredact`: NotificationRecord.dump in AOSP frameworks/base
  (services/core/java/com/android/server/notification/NotificationRecord.java): the record
  header `NotificationRecord(0x%08x: pkg=%s user=%s id=%d tag=%s importance=%d key=%s...`,
  then one `field=value` line per field, `extras={` with one line per extra printed as
  `key=SimpleClassName (String.valueOf(value))`, arrays as `Type[] (N)` plus `[j] item`
  lines. Message bundles are androidx NotificationCompat.MessagingStyle.Message.toBundle()
  (text, time, sender, sender_person on API 28+, type/uri for media), printed by
  Bundle.toString as `Bundle[{k=v, ...}]` in ArrayMap order (ascending Java hashCode of the
  key), which is why `java_hash` is here.
- `uiautomator dump`: AccessibilityNodeInfoDumper in AOSP frameworks/uiautomator; the
  command prints "UI hierchary dumped to: <path>" (sic, the typo is in Android).
  Attribute values are escaped by the platform's XmlSerializer, newlines as `&#10;`.
- `content query`: AOSP frameworks/base cmds/content (Content.java): `Row: N k=v, k=v`,
  "No result found." when empty.
- `dumpsys window`: WindowManagerService / PhoneWindowManager dumps; only the lines the line
  reads (mDreamingLockscreen, KeyguardServiceDelegate showing=, mCurrentFocus) plus
  surrounding context.
- `am start`: Am.java / ActivityManagerShellCommand "Starting: Intent { ... }".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

MESSAGES = "com.google.android.apps.messaging"
LAUNCHER = "com.google.android.apps.nexuslauncher"


def java_hash(s: str) -> int:
    h = 0
    for ch in s.encode("utf-16-le").decode("utf-16-le"):
        for unit in _utf16_units(ch):
            h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def _utf16_units(ch: str) -> list[int]:
    code = ord(ch)
    if code < 0x10000:
        return [code]
    code -= 0x10000
    return [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]


def bundle(items: dict[str, str]) -> str:
    """Bundle.toString of an unparcelled bundle: ArrayMap order, `k=v` joined by ", "."""
    ordered = sorted(items.items(), key=lambda kv: java_hash(kv[0]))
    return "Bundle[{" + ", ".join(f"{k}={v}" for k, v in ordered) + "}]"


@dataclass(frozen=True)
class NoteMessage:
    sender: str | None
    text: str
    time: int
    mime: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class NoteRecord:
    id: int
    uid: int
    title: str
    conversation_title: str | None
    group: bool
    messages: Sequence[NoteMessage]
    self_name: str = "You"
    parcelled: bool = False  # print the messages still parcelled (an old Android)


def _message_bundle(m: NoteMessage, n: int) -> str:
    items = {"text": m.text, "time": str(m.time)}
    if m.sender is not None:
        items["sender"] = m.sender
        items["sender_person"] = f"android.app.Person@{(0x1A2B3C + n * 7919):x}"
    if m.mime is not None:
        items["type"] = m.mime
        items["uri"] = (
            m.uri
            or "content://com.google.android.apps.messaging.datamodel.MediaScratchFileProvider/1"
        )
    return bundle(items)


def notification_dump(records: Iterable[NoteRecord], other_packages: bool = True) -> str:
    out: list[str] = ["", "Current Notification Manager state:", "  Notification List:"]
    if other_packages:
        out += _foreign_record()
    records = list(records)
    if len(records) > 1:
        out += _summary_record(records[0].uid)
    for rec in records:
        key = f"0|{MESSAGES}|{rec.id}|null|{rec.uid}"
        last = rec.messages[-1].text if rec.messages else ""
        p = "      "
        out += [
            f"    NotificationRecord(0x{(0x0B6E0000 + rec.id):08x}: pkg={MESSAGES} "
            f"user=UserHandle{{0}} id={rec.id} tag=null importance=4 key={key}: "
            f"Notification(channel=bugle_default_channel shortcut={rec.id} contentView=null "
            "vibrate=null sound=null defaults=0x0 flags=0x18 color=0xff1a73e8 category=msg "
            f"groupKey=bugle_notification_group vis=PRIVATE))",
            f"{p}uid={rec.uid} userId=0",
            f"{p}opPkg={MESSAGES}",
            f"{p}icon=Icon(typ=RESOURCE pkg={MESSAGES} id=0x7f080457)",
            f"{p}flags=0x18",
            f"{p}pri=1",
            f"{p}key={key}",
            f"{p}seen=false",
            f"{p}groupKey=0|{MESSAGES}|g:bugle_notification_group",
            f"{p}fullscreenIntent=null",
            f"{p}contentIntent=PendingIntent{{5c1e2a1: android.os.BinderProxy@3f1b0c6}}",
            f"{p}deleteIntent=PendingIntent{{8a9d2f7: android.os.BinderProxy@11d4e64}}",
            f"{p}number=0",
            f"{p}groupAlertBehavior=2",
            f"{p}when={rec.messages[-1].time if rec.messages else 0}",
            f"{p}tickerText={rec.title}: {last}" if rec.messages else f"{p}tickerText=null",
            f"{p}contentView=null",
            f"{p}bigContentView=null",
            f"{p}headsUpContentView=null",
            f"{p}color=0xff1a73e8",
            f"{p}timeout=0",
            f"{p}actions={{",
            f'{p}    [0] "Reply" -> PendingIntent{{2b7c1d0: android.os.BinderProxy@6e0f5a9}}',
            f'{p}    [1] "Mark as read" -> '
            "PendingIntent{c4d8e13: android.os.BinderProxy@77a1b02}",
            f"{p}  }}",
            f"{p}extras={{",
        ]
        e = p + "    "
        out.append(f"{e}android.title=String ({rec.title})")
        out.append(f"{e}android.reduced.images=Boolean (true)")
        out.append(f"{e}android.subText=null")
        out.append(f"{e}android.template=String (android.app.Notification$MessagingStyle)")
        out.append(f"{e}android.showChronometer=Boolean (false)")
        out.append(f"{e}android.text=String ({last})")
        out.append(f"{e}android.progress=Integer (0)")
        out.append(f"{e}android.progressMax=Integer (0)")
        out.append(f"{e}android.selfDisplayName=String ({rec.self_name})")
        if rec.conversation_title is not None:
            out.append(f"{e}android.conversationTitle=String ({rec.conversation_title})")
        else:
            out.append(f"{e}android.conversationTitle=null")
        out.append(f"{e}android.appInfo=ApplicationInfo (ApplicationInfo{{4c2d1e0 {MESSAGES}}})")
        out.append(f"{e}android.showWhen=Boolean (true)")
        out.append(
            f"{e}android.messagingStyleUser=Bundle ("
            + bundle(
                {
                    "name": rec.self_name,
                    "isBot": "false",
                    "isImportant": "false",
                    "icon": "null",
                    "uri": "null",
                    "key": "null",
                }
            )
            + ")"
        )
        out.append(f"{e}android.messagingUser=Person (android.app.Person@9e3f1a2)")
        out.append(f"{e}android.largeIcon=Icon (Icon(typ=BITMAP size=192x192))")
        out.append(f"{e}android.isGroupConversation=Boolean ({str(rec.group).lower()})")
        out.append(f"{e}android.messages=Parcelable[] ({len(rec.messages)})")
        for n, m in enumerate(rec.messages):
            item = (
                f"Bundle[mParcelledData.dataSize={180 + len(m.text.encode()) * 2}]"
                if rec.parcelled
                else _message_bundle(m, n)
            )
            out.append(f"{e}  [{n}] {item}")
        out.append(f"{e}android.people.list=ArrayList ([android.app.Person@9e3f1a2])")
        out.append(f"{p}}}")
        out += [
            f"{p}stats=SingleNotificationStats{{posttimeElapsedMs=1201, "
            "posttimeToFirstClickMs=-1}",
            f"{p}mContactAffinity=0.0",
            f"{p}mRecentlyIntrusive=false",
            f"{p}mPackagePriority=0",
            f"{p}mPackageVisibility=-1000",
            f"{p}mSystemImportance=UNSPECIFIED",
            f"{p}mImportance=HIGH",
            f"{p}mIntercept=false",
            f"{p}mHidden==false",
            f"{p}mGlobalSortKey=crtcl=0x0000:intrsv=1:grp=0:|0|{MESSAGES}|{rec.id}|null|{rec.uid}",
            f"{p}mIsInterruptive=true",
            f"{p}effectiveNotificationChannel=NotificationChannel{{mId='bugle_default_channel', "
            "mName=Incoming messages, mImportance=4}",
        ]
    out += [
        "  ",
        "  mArchive=Archive (2 notifications)",
        "  Snoozed notifications:",
        "  Pending snoozed notifications",
        "",
    ]
    return "\n".join(out) + "\n"


def _summary_record(uid: int) -> list[str]:
    """Messages bundles several conversations under a group summary with no messages of its
    own; the parser must pass over it."""
    p = "      "
    key = f"0|{MESSAGES}|0|summary|{uid}"
    return [
        f"    NotificationRecord(0x0b6e0000: pkg={MESSAGES} user=UserHandle{{0}} id=0 "
        f"tag=summary importance=4 key={key}: Notification(channel=bugle_default_channel "
        "shortcut=null contentView=null vibrate=null sound=null defaults=0x0 flags=0x218 "
        "color=0xff1a73e8 category=msg groupKey=bugle_notification_group vis=PRIVATE))",
        f"{p}uid={uid} userId=0",
        f"{p}opPkg={MESSAGES}",
        f"{p}key={key}",
        f"{p}extras={{",
        f"{p}    android.title=String (Messages)",
        f"{p}    android.subText=String (New messages)",
        f"{p}}}",
        f"{p}stats=SingleNotificationStats{{posttimeElapsedMs=1180, posttimeToFirstClickMs=-1}}",
    ]


def _foreign_record() -> list[str]:
    """A notification of another app, so the parser has to pick Messages' out."""
    p = "      "
    key = "0|android|17040900|null|1000"
    return [
        f"    NotificationRecord(0x0a1f2b3c: pkg=android user=UserHandle{{-1}} id=17040900 "
        f"tag=null importance=2 key={key}: Notification(channel=DEVELOPER_IMPORTANT "
        "shortcut=null contentView=null vibrate=null sound=null defaults=0x0 flags=0x2 "
        "color=0xff607d8b vis=PUBLIC))",
        f"{p}uid=1000 userId=-1",
        f"{p}opPkg=android",
        f"{p}key={key}",
        f"{p}extras={{",
        f"{p}    android.title=String (USB debugging connected)",
        f"{p}    android.text=String (Tap to turn off USB debugging)",
        f"{p}    android.template=String (android.app.Notification$BigTextStyle)",
        f"{p}}}",
        f"{p}mImportance=LOW",
    ]


@dataclass(frozen=True)
class Bubble:
    text: str
    outgoing: bool


def ui_dump(
    *,
    screen: str,
    title: str = "",
    bubbles: Sequence[Bubble] = (),
    compose: str = "",
    hint: str = "RCS message",
    send_id: str = f"{MESSAGES}:id/send_message_button_icon",
    send_desc: str = "Send end-to-end encrypted message",
    send_enabled: bool = True,
    attachment: bool = False,
) -> str:
    """The XML `uiautomator dump` writes, for the home screen, the lock screen or a
    Messages conversation with its compose box."""
    nodes: list[str] = []

    def node(
        depth: int,
        index: int,
        cls: str,
        pkg: str,
        bounds: str,
        *,
        text: str = "",
        rid: str = "",
        desc: str = "",
        clickable: bool = False,
        enabled: bool = True,
        focusable: bool = False,
        close: bool = True,
    ) -> None:
        attrs = (
            f'index="{index}" text={_attr(text)} resource-id={_attr(rid)} class={_attr(cls)} '
            f'package={_attr(pkg)} content-desc={_attr(desc)} checkable="false" '
            f'checked="false" clickable="{str(clickable).lower()}" '
            f'enabled="{str(enabled).lower()}" focusable="{str(focusable).lower()}" '
            'focused="false" scrollable="false" long-clickable="false" '
            f'password="false" selected="false" bounds="{bounds}"'
        )
        nodes.append(f"<node {attrs}" + (" />" if close else ">"))

    if screen == "home":
        node(0, 0, "android.widget.FrameLayout", LAUNCHER, "[0,0][1080,2400]", close=False)
        node(
            1,
            0,
            "android.widget.TextView",
            LAUNCHER,
            "[42,2040][246,2310]",
            text="Messages",
            desc="Messages",
            clickable=True,
        )
        node(
            1,
            1,
            "android.widget.TextView",
            LAUNCHER,
            "[288,2040][492,2310]",
            text="Phone",
            desc="Phone",
            clickable=True,
        )
        nodes.append("</node>")
    elif screen == "keyguard":
        pkg = "com.android.systemui"
        node(0, 0, "android.widget.FrameLayout", pkg, "[0,0][1080,2400]", close=False)
        node(
            1,
            0,
            "android.widget.TextView",
            pkg,
            "[0,300][1080,520]",
            text="12:04",
            rid="com.android.systemui:id/clock",
        )
        node(
            1,
            1,
            "android.widget.TextView",
            pkg,
            "[0,2100][1080,2200]",
            text="Swipe up to unlock",
            rid="com.android.systemui:id/keyguard_indication_text",
        )
        nodes.append("</node>")
    else:
        pkg = MESSAGES
        node(0, 0, "android.widget.FrameLayout", pkg, "[0,0][1080,2400]", close=False)
        node(
            1,
            0,
            "android.widget.TextView",
            pkg,
            "[168,147][780,220]",
            text=title,
            rid=f"{pkg}:id/conversation_title",
        )
        node(
            1,
            1,
            "androidx.recyclerview.widget.RecyclerView",
            pkg,
            "[0,273][1080,2058]",
            rid=f"{pkg}:id/messages_list",
            close=False,
        )
        top = 300
        for n, b in enumerate(bubbles[-8:]):
            left = "[400," if b.outgoing else "[42,"
            node(
                2,
                n,
                "android.widget.TextView",
                pkg,
                f"{left}{top}][1038,{top + 160}]",
                text=b.text,
                rid=f"{pkg}:id/message_text",
                focusable=True,
            )
            top += 190
        nodes.append("</node>")
        if attachment:
            # The attachment preview above the compose box; the ids are those of AOSP
            # Messaging (Bugle, which Google Messages grew from): attachment_draft_view
            # holding attachment_image_view and its close_button. An assumption about
            # Google Messages until the HIL test captures a real dump.
            node(
                1,
                4,
                "android.widget.FrameLayout",
                pkg,
                "[150,1800][600,2090]",
                rid=f"{pkg}:id/attachment_draft_view",
                close=False,
            )
            node(
                2,
                0,
                "android.widget.ImageView",
                pkg,
                "[150,1800][600,2090]",
                rid=f"{pkg}:id/attachment_image_view",
                desc="Image attachment",
            )
            node(
                2,
                1,
                "android.widget.ImageButton",
                pkg,
                "[530,1800][600,1870]",
                rid=f"{pkg}:id/close_button",
                desc="Remove attachment",
                clickable=True,
            )
            nodes.append("</node>")
        node(
            1,
            2,
            "android.widget.EditText",
            pkg,
            "[150,2106][900,2232]",
            text=compose or hint,
            rid=f"{pkg}:id/compose_message_text",
            clickable=True,
            focusable=True,
        )
        node(
            1,
            3,
            "android.widget.ImageView",
            pkg,
            "[954,2106][1080,2232]",
            rid=send_id,
            desc=send_desc,
            clickable=True,
            enabled=send_enabled and (bool(compose) or attachment),
            focusable=True,
        )
        nodes.append("</node>")
    body = "".join(nodes)
    return (
        "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>"
        f'<hierarchy rotation="0">{body}</hierarchy>'
    )


SEND_BOUNDS = (954, 2106, 1080, 2232)


def _attr(value: str) -> str:
    # quoteattr escapes &, <, >, " and turns \n, \r, \t into character references, as
    # Android's serializer does for attribute values.
    return quoteattr(value, {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def window_dump(*, locked: bool, focus: str) -> str:
    showing = str(locked).lower()
    return (
        "\n".join(
            [
                "WINDOW MANAGER POLICY STATE (dumpsys window policy)",
                "    mSafeMode=false mSystemReady=true mSystemBooted=true",
                "    mLidState=LID_ABSENT mLidOpenRotation=-1 "
                "mCameraLensCoverState=LENS_COVER_ABSENT",
                f"    mShowingDream=false mDreamingLockscreen={showing} mDreamingSleepToken=null",
                "    mScreenOnEarly=true mScreenOnFully=true",
                "    mKeyguardDrawComplete=true mWindowManagerDrawComplete=true",
                "    KeyguardServiceDelegate",
                f"      showing={showing}",
                f"      showingAndNotOccluded={showing}",
                f"      inputRestricted={showing}",
                "      occluded=false",
                "      secure=true",
                "      dreaming=false",
                "      systemIsReady=true",
                "      deviceHasKeyguard=true",
                "      enabled=true",
                "      offReason=OFF_BECAUSE_OF_USER",
                "      currentUser=0",
                "      bootCompleted=true",
                "      screenState=SCREEN_STATE_ON",
                "      interactiveState=INTERACTIVE_STATE_AWAKE",
                "",
                "WINDOW MANAGER WINDOWS (dumpsys window windows)",
                f"  mCurrentFocus=Window{{8d3c1a u0 {focus}}}",
                f"  mFocusedApp=ActivityRecord{{5a1b2c u0 {focus} t42}}",
                "",
            ]
        )
        + "\n"
    )


@dataclass(frozen=True)
class ProviderRow:
    id: int
    address: str
    date: int
    body: str
    thread_id: int


def content_query(rows: Sequence[ProviderRow], projection: Sequence[str]) -> str:
    if not rows:
        return "No result found.\n"
    out = []
    for n, row in enumerate(rows):
        values = {
            "_id": str(row.id),
            "address": row.address,
            "date": str(row.date),
            "body": row.body,
            "thread_id": str(row.thread_id),
        }
        out.append(f"Row: {n} " + ", ".join(f"{k}={values.get(k, 'NULL')}" for k in projection))
    return "\n".join(out) + "\n"


PROVIDER_DENIED = (
    "Error while accessing provider:sms\n"
    "java.lang.SecurityException: Permission Denial: opening provider "
    "com.android.providers.telephony.SmsProvider from (null) (pid=7311, uid=2000) requires "
    "android.permission.READ_SMS or android.permission.WRITE_SMS\n"
    "\tat android.os.Parcel.createExceptionOrNull(Parcel.java:3011)\n"
)


# -- MMS (content://mms, content://mms/part, content://mms/<id>/addr) ----------------------
# Columns as Telephony.Mms / Mms.Part / Mms.Addr name them (frameworks/base
# core/java/android/provider/Telephony.java). `date` of an MMS is in SECONDS (PDU Date),
# unlike the SMS table's milliseconds. msg_box 1 = inbox; m_type 132 = retrieve-conf (a
# downloaded message; 130 is the notification-ind of one not downloaded yet). Addr type
# 137 = From, 151 = To, 130 = Cc (PduHeaders). `m_size` is written by PduPersister from
# the parts' lengths. Values print as Content.java's QueryCommand prints them: String.valueOf
# of the long for integers, the string as-is, "NULL" for null.


@dataclass(frozen=True)
class MmsPartRow:
    id: int
    mid: int
    ct: str
    name: str | None
    cl: str | None
    text: str | None
    data: str | None  # _data: the file in the telephony provider's private directory


def query_rows(rows: Sequence[dict[str, str | int | None]], projection: Sequence[str]) -> str:
    """Content.java QueryCommand: `Row: N col=value, col=value` per row, NULL for null."""
    if not rows:
        return "No result found.\n"
    out = []
    for n, row in enumerate(rows):
        cells = []
        for col in projection:
            value = row.get(col)
            cells.append(f"{col}={'NULL' if value is None else value}")
        out.append(f"Row: {n} " + ", ".join(cells))
    return "\n".join(out) + "\n"


def part_file(part_id: int) -> str:
    # Where TelephonyProvider keeps part data since Android 7 (device-protected storage);
    # the shell user cannot read this path, only the provider's openFile through `content
    # read`.
    return (
        f"/data/user_de/0/com.android.providers.telephony/app_parts/PART_{1700000000000 + part_id}"
    )


# ContentProvider.openFile failing (the file behind a part is gone): Content.java prints
# the exception, on stderr, which adbd's exec service passes through on the same stream.
def part_missing(uri: str) -> str:
    return (
        "Error while accessing provider:mms\n"
        f"java.io.FileNotFoundException: No such file or directory: {uri}\n"
        "\tat android.database.DatabaseUtils.readExceptionWithFileNotFoundExceptionFromParcel"
        "(DatabaseUtils.java:151)\n"
    )
