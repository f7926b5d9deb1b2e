/**
 * The one way this project reads and writes XML: fast-xml-parser, configured
 * so every element reads back the same way (an array of element objects) and
 * every text and attribute value is escaped on the way out.
 */
import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';

/** An element as the builder takes it: `@_name` keys are attributes, `#text` is text, other keys are children. */
export type XmlTree = { [key: string]: XmlValue };
export type XmlValue = string | number | XmlTree | XmlTree[] | undefined;

const ATTRIBUTE_PREFIX = '@_';
const TEXT = '#text';
const ATTRIBUTES = '@';

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: ATTRIBUTE_PREFIX,
  textNodeName: TEXT,
  format: true,
  indentBy: '  ',
  // `<acpi/>` rather than `<acpi></acpi>`; every text we emit is non-empty by validation.
  suppressEmptyNode: true,
  processEntities: true,
});

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  attributesGroupName: ATTRIBUTES,
  textNodeName: TEXT,
  parseTagValue: false,
  parseAttributeValue: false,
  alwaysCreateTextNode: true,
  trimValues: true,
  isArray: (_name: string, _path: unknown, _isLeaf: boolean, isAttribute: boolean) => !isAttribute,
});

export function attribute(name: string): string {
  return `${ATTRIBUTE_PREFIX}${name}`;
}

export function buildXml(root: XmlTree): string {
  return builder.build(root) as string;
}

/** A parsed element: read it only through the accessors below. */
export interface XmlElement {
  readonly [key: string]: unknown;
}

/** Parses a document and returns its root element, or a reason it cannot be read. */
export function parseXmlRoot(xml: unknown, rootName: string): XmlElement | { error: string } {
  if (typeof xml !== 'string' || xml.trim() === '') return { error: 'it is empty or not a string' };
  const validation = XMLValidator.validate(xml);
  if (validation !== true) {
    return { error: `it is not well-formed XML (line ${validation.err.line}: ${validation.err.msg})` };
  }
  const document: unknown = parser.parse(xml);
  const root = isElement(document) ? children(document, rootName)[0] : undefined;
  if (root === undefined) return { error: `its root element is not <${rootName}>` };
  return root;
}

export function children(element: XmlElement, name: string): XmlElement[] {
  const value = Object.prototype.hasOwnProperty.call(element, name) ? element[name] : undefined;
  return Array.isArray(value) ? value.filter(isElement) : [];
}

export function child(element: XmlElement, name: string): XmlElement | undefined {
  return children(element, name)[0];
}

/** Names of the element's child elements, in document order of first appearance. */
export function childNames(element: XmlElement): string[] {
  return Object.keys(element).filter((key) => key !== TEXT && key !== ATTRIBUTES);
}

export function attr(element: XmlElement, name: string): string | undefined {
  const attributes = element[ATTRIBUTES];
  if (!isElement(attributes)) return undefined;
  const value = Object.prototype.hasOwnProperty.call(attributes, name) ? attributes[name] : undefined;
  return typeof value === 'string' ? value : undefined;
}

export function text(element: XmlElement | undefined): string | undefined {
  const value = element?.[TEXT];
  return typeof value === 'string' ? value : undefined;
}

function isElement(value: unknown): value is XmlElement {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
